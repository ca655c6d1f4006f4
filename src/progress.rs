//! Progress of the long steps a person waits for at a terminal: generating a bank, building the
//! rollups of a data state. The binary installs a reporter once, for stderr: a bar where stderr
//! is a terminal, plain lines (at most one every few seconds, and the last) where it is not, so
//! a CI log shows how far a 100M-row run got without thousands of redraws. Without one installed
//! (tests, a library user) every step is silent. Log lines go through [`Stderr`], which lifts the
//! bar for the line and draws it again below, so the two never mix on one line.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How a step is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    Bar,
    Lines,
}

static DISPLAY: OnceLock<Display> = OnceLock::new();
/// The bars drawn now (log lines lift them).
static ACTIVE: Mutex<Vec<(u64, ProgressBar)>> = Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Stderr for the log: each write lifts the bars drawn now and draws them again after it.
pub struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE
            .lock()
            .expect("progress lock")
            .last()
            .map(|(_, b)| b.clone());
        match active {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Chooses by stderr: a bar on a terminal, lines otherwise. The first call wins.
pub fn install_for_stderr() {
    let display = if std::io::stderr().is_terminal() {
        Display::Bar
    } else {
        Display::Lines
    };
    let _ = DISPLAY.set(display);
}

/// A step of `total` units (`unit`: "customers", "rollups").
pub fn begin(what: &str, total: u64, unit: &'static str) -> Step {
    let shown = match DISPLAY.get() {
        None => Shown::Silent,
        Some(Display::Bar) => {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed}, {eta} left)",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(what.to_string());
            let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ACTIVE
                .lock()
                .expect("progress lock")
                .push((id, bar.clone()));
            Shown::Bar(id, bar)
        }
        Some(Display::Lines) => Shown::Lines(Mutex::new(Lines {
            last: Instant::now(),
            printed: false,
        })),
    };
    Step {
        what: what.to_string(),
        unit,
        total,
        started: Instant::now(),
        done: std::sync::atomic::AtomicU64::new(0),
        shown,
    }
}

/// Lines come at most this often.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Step {
    what: String,
    unit: &'static str,
    total: u64,
    started: Instant,
    done: std::sync::atomic::AtomicU64,
    shown: Shown,
}

enum Shown {
    Silent,
    Bar(u64, ProgressBar),
    Lines(Mutex<Lines>),
}

struct Lines {
    last: Instant,
    /// Whether a line was printed: a step too short for one ends quietly too.
    printed: bool,
}

impl Step {
    /// `n` more units done; `note` says what the last one was (a rollup's name), or "".
    pub fn advance(&self, n: u64, note: &str) {
        let done = self.done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        match &self.shown {
            Shown::Silent => {}
            Shown::Bar(_, bar) => {
                bar.inc(n);
                if !note.is_empty() {
                    bar.set_message(note.to_string());
                }
            }
            Shown::Lines(lines) => {
                let mut lines = lines.lock().expect("progress lock");
                if lines.last.elapsed() >= LINE_EVERY && done < self.total {
                    lines.last = Instant::now();
                    lines.printed = true;
                    eprintln!("{}", self.line(done, note));
                }
            }
        }
    }

    /// The step is over: where lines were printed, a last one (a bar is cleared when the step
    /// is dropped).
    pub fn finish(&self, note: &str) {
        let done = self.done.load(std::sync::atomic::Ordering::Relaxed);
        match &self.shown {
            Shown::Silent | Shown::Bar(..) => {}
            Shown::Lines(lines) => {
                if lines.lock().expect("progress lock").printed {
                    eprintln!("{}", self.line(done, note));
                }
            }
        }
    }

    fn line(&self, done: u64, note: &str) -> String {
        let pct = (done * 100).checked_div(self.total).unwrap_or(100);
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(", {note}")
        };
        format!(
            "{}: {done}/{} {} ({pct}%), {:.1} s{note}",
            self.what,
            self.total,
            self.unit,
            self.started.elapsed().as_secs_f64()
        )
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Shown::Bar(id, bar) = &self.shown {
            ACTIVE
                .lock()
                .expect("progress lock")
                .retain(|(other, _)| other != id);
            bar.finish_and_clear();
        }
    }
}
