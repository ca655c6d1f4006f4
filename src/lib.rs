//! kpilens: a decision-cockpit backend for banks. YAML metrics, computed on DataFusion,
//! cached, served as JSON.
//!
//! Layers, outermost first: `api` (HTTP) -> `service` (the query path) -> `semantic` (protocol,
//! validation, planning) -> `catalog` (validated definitions) -> `spec` (YAML types);
//! `engine` runs plans, `cache` keeps results, `datagen` makes the demo bank.

pub mod alerts;
pub mod api;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod dashboard;
pub mod datagen;
pub mod demo;
pub mod engine;
pub mod export;
pub mod metric_tests;
pub mod net;
pub mod progress;
pub mod protocol;
pub mod security;
pub mod semantic;
pub mod server;
pub mod service;
pub mod spec;
pub mod state;
pub mod telemetry;
pub mod text;
