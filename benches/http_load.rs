//! A closed-loop HTTP/1.1 load generator with no dependencies (built by `benches/run.sh` with
//! plain `rustc`, so it links neither DataFusion nor anything else): N clients, each on one
//! keep-alive connection, send the same GET as fast as answers come back for a while.
//!
//! usage: http_load HOST:PORT PATH CLIENTS SECONDS [HEADER: VALUE]...
//! prints one JSON line: requests, seconds, requests_per_second, p50_ms, p99_ms, errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: http_load HOST:PORT PATH CLIENTS SECONDS [HEADER: VALUE]...");
        std::process::exit(2);
    }
    let (addr, path) = (args[1].clone(), args[2].clone());
    let clients: usize = args[3].parse().expect("CLIENTS is a number");
    let seconds: f64 = args[4].parse().expect("SECONDS is a number");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for h in &args[5..] {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");

    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, request) = (addr.clone(), request.clone());
            std::thread::spawn(move || client(&addr, request.as_bytes(), until))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    for w in workers {
        let (l, e) = w.join().expect("client thread");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    println!(
        "{{\"requests\": {}, \"seconds\": {:.3}, \"requests_per_second\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"errors\": {}}}",
        latencies.len(),
        elapsed,
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        errors
    );
}

/// One connection's loop: latencies in microseconds of the 200/304 answers, and errors.
fn client(addr: &str, request: &[u8], until: Instant) -> (Vec<u64>, u64) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut conn: Option<BufReader<TcpStream>> = None;
    while Instant::now() < until {
        if conn.is_none() {
            match TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_nodelay(true).ok();
                    conn = Some(BufReader::new(s));
                }
                Err(_) => {
                    errors += 1;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let reader = conn.as_mut().expect("connected above");
        let sent = Instant::now();
        match exchange(reader, request) {
            Ok(status) if status == 200 || status == 304 => {
                latencies.push(sent.elapsed().as_micros() as u64)
            }
            Ok(_) => errors += 1,
            Err(_) => {
                errors += 1;
                conn = None;
            }
        }
    }
    (latencies, errors)
}

/// Sends the request and reads one response (status line, headers, Content-Length body).
fn exchange(reader: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<u16> {
    reader.get_mut().write_all(request)?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(status)
}
