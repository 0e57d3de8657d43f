//! The example appliance's web server as a test sees it from the host: one HTTP GET, and a
//! wait until every node's server answers with the appliance's page.

use super::poll_ok;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What the appliance's page says once its web server is up.
pub const PAGE_TEXT: &str = "The example appliance is up";

/// One HTTP GET from the host to `addr`, waiting at most `read_timeout` for the answer; the
/// whole response, or why not.
pub fn http_get(addr: &str, path: &str, read_timeout: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))
        .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(read_timeout)).ok();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

/// Waits up to `limit` for the appliance's page on port 8080 of each of `ips`; each GET waits
/// at most `read_timeout`.
pub fn web_answers_on(ips: &[&str], limit: Duration, read_timeout: Duration) {
    for ip in ips {
        let addr = format!("{ip}:8080");
        poll_ok(
            Duration::from_millis(500),
            &format!("the appliance's web server on {addr}"),
            limit,
            || match http_get(&addr, "/", read_timeout) {
                Ok(b) if b.contains(PAGE_TEXT) => Ok(()),
                other => Err(other),
            },
        );
    }
}
