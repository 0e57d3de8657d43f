//! The bytes on the wire between a copy's source and its receiver.
//!
//! Records (installer → agent on stdin, and chunk server → fetching agent over TCP):
//! `index u32 LE | len u64 LE | len bytes`. Two indices are reserved: [`PING`] (len 0, "the
//! installer is still there") and [`ERROR`] (the bytes are a UTF-8 message, then the sender
//! closes).
//!
//! A fetching agent opens a TCP connection with one line, `BALE-COPY/1 <token> <digest>`, and
//! then asks with lines: `want 0-3,7` (answered with one record per chunk, in that order, each
//! sent as soon as the server has it) or `stub` (answered with the raw program bytes and a
//! close, so a node without bale yet can fetch it with nothing but bash's `/dev/tcp`).
//!
//! The installer, once the agent holds the tail, may open the same kind of connection and send
//! `push`, then records until it closes: its chunks travel straight over TCP, not through SSH's
//! encryption and the extra copies of a session (the digests vouch for the bytes either way).

use bale_payload::chunks::MAX_TAIL_LEN;
use std::io::{self, BufRead, Read, Write};

pub const HELLO: &str = "BALE-COPY/1";
pub const PUSH: &str = "push";
pub const PING: u32 = u32::MAX - 1;
pub const ERROR: u32 = u32::MAX;
/// Longest request line accepted (a want list of scattered chunks can be long).
pub const MAX_LINE: usize = 1 << 20;

pub fn write_record(w: &mut impl Write, index: u32, data: &[u8]) -> io::Result<()> {
    w.write_all(&record_head(index, data.len() as u64))?;
    w.write_all(data)
}

/// The 12 bytes before a record's data.
pub fn record_head(index: u32, len: u64) -> [u8; 12] {
    let mut head = [0u8; 12];
    head[..4].copy_from_slice(&index.to_le_bytes());
    head[4..].copy_from_slice(&len.to_le_bytes());
    head
}

pub fn write_error(w: &mut impl Write, msg: &str) -> io::Result<()> {
    write_record(w, ERROR, msg.as_bytes())?;
    w.flush()
}

/// A record's header; `None` at a clean end of stream.
pub fn read_head(r: &mut impl Read) -> io::Result<Option<(u32, u64)>> {
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut i = [0u8; 4];
    i.copy_from_slice(&head[..4]);
    let mut l = [0u8; 8];
    l.copy_from_slice(&head[4..]);
    Ok(Some((u32::from_le_bytes(i), u64::from_le_bytes(l))))
}

/// Reads one record into `buf` (resized to its length) and returns its index; `None` at a clean
/// end of stream. A length beyond any chunk's is refused before anything is allocated.
/// `alive` runs after the header and after every MiB of the body, so a slow link still shows
/// life to whoever watches.
pub fn read_record(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    mut alive: impl FnMut(),
) -> io::Result<Option<u32>> {
    let Some((index, len)) = read_head(r)? else {
        return Ok(None);
    };
    alive();
    if len > MAX_TAIL_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a record of {len} bytes is larger than any chunk"),
        ));
    }
    buf.clear();
    buf.resize(len as usize, 0);
    for piece in buf.chunks_mut(1 << 20) {
        r.read_exact(piece)?;
        alive();
    }
    Ok(Some(index))
}

/// Reads a line of at most [`MAX_LINE`] bytes, without its newline; `None` at end of stream.
pub fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "request line too long or cut off",
        ));
    }
    buf.pop();
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "request line is not UTF-8"))
}

/// `0-3,7` for [0, 1, 2, 3, 7]; the indices must be sorted.
pub fn encode_ranges(indices: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// Parses [`encode_ranges`] output; every index must be below `limit`.
pub fn decode_ranges(s: &str, limit: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let num = |t: &str| {
            t.parse::<usize>()
                .map_err(|_| format!("{t:?} is not a chunk number"))
        };
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if a > b || b >= limit {
            return Err(format!(
                "chunk range {part:?} is outside 0..{limit} or reversed"
            ));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A one-time secret: 32 random bytes from the kernel, as hex.
pub fn new_token() -> io::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}

/// A bitmap of chunk indices, as hex, for the state file.
pub fn bitmap_hex(have: &[bool]) -> String {
    let mut bytes = vec![0u8; have.len().div_ceil(8)];
    for (i, h) in have.iter().enumerate() {
        if *h {
            bytes[i / 8] |= 1 << (i % 8);
        }
    }
    hex::encode(bytes)
}

pub fn bitmap_from_hex(s: &str, len: usize) -> Option<Vec<bool>> {
    let bytes = hex::decode(s).ok()?;
    if bytes.len() != len.div_ceil(8) {
        return None;
    }
    Some(
        (0..len)
            .map(|i| bytes[i / 8] & (1 << (i % 8)) != 0)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip_and_refuse_nonsense() {
        for v in [
            vec![],
            vec![0],
            vec![0, 1, 2, 3, 7],
            vec![2, 4, 5, 9, 10, 11],
        ] {
            let s = encode_ranges(&v);
            assert_eq!(decode_ranges(&s, 12).unwrap(), v, "{s}");
        }
        assert_eq!(encode_ranges(&[0, 1, 2, 3, 7]), "0-3,7");
        assert!(decode_ranges("3-1", 10).is_err());
        assert!(decode_ranges("0-10", 10).is_err());
        assert!(decode_ranges("x", 10).is_err());
        assert!(decode_ranges("1--2", 10).is_err());
    }

    #[test]
    fn records_and_lines() {
        let mut buf = Vec::new();
        write_record(&mut buf, 5, b"hello").unwrap();
        write_record(&mut buf, PING, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(read_head(&mut r).unwrap(), Some((5, 5)));
        let mut data = [0u8; 5];
        r.read_exact(&mut data).unwrap();
        assert_eq!(&data, b"hello");
        assert_eq!(read_head(&mut r).unwrap(), Some((PING, 0)));
        assert_eq!(read_head(&mut r).unwrap(), None);
        // A header cut in the middle is an error, not an end.
        assert!(read_head(&mut &buf[..7]).is_err());
        // Whole records, with a sign of life after the head and each MiB of the body.
        let (mut r, mut body, mut alive) = (&buf[..], Vec::new(), 0);
        assert_eq!(
            read_record(&mut r, &mut body, || alive += 1).unwrap(),
            Some(5)
        );
        assert_eq!((&body[..], alive), (&b"hello"[..], 2));
        assert_eq!(read_record(&mut r, &mut body, || {}).unwrap(), Some(PING));
        assert!(body.is_empty());
        assert_eq!(read_record(&mut r, &mut body, || {}).unwrap(), None);
        assert!(read_record(&mut &buf[..15], &mut body, || {}).is_err());
        let huge = record_head(1, MAX_TAIL_LEN + 1);
        assert!(read_record(&mut &huge[..], &mut body, || {}).is_err());

        let mut lines = io::BufReader::new(&b"want 0-2\nstub"[..]);
        assert_eq!(read_line(&mut lines).unwrap().as_deref(), Some("want 0-2"));
        assert!(read_line(&mut lines).is_err(), "no newline: cut off");
    }

    #[test]
    fn bitmaps_and_secrets() {
        let have = vec![true, false, false, true, true, false, false, false, true];
        let s = bitmap_hex(&have);
        assert_eq!(bitmap_from_hex(&s, have.len()).unwrap(), have);
        assert!(bitmap_from_hex(&s, 20).is_none());
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
        let t = new_token().unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(t, new_token().unwrap());
    }
}
