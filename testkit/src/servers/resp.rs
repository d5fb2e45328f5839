//! A minimal blocking RESP client, enough to form a cluster and probe servers (no driver dependency).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A reply, simplified: status, error, integer and bulk replies as text; arrays flattened into lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, bulk strings and integers.
    Text(String),
    /// `-ERR …`.
    Error(String),
    /// A nil bulk or array.
    Nil,
    /// An array of replies.
    Array(Vec<Reply>),
}

/// Sends one command to `127.0.0.1:port` and reads one reply.
pub fn command(port: u16, args: &[&str]) -> Result<Reply, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect :{port}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream
        .write_all(out.as_bytes())
        .map_err(|e| format!("write :{port}: {e}"))?;
    let mut reader = BufReader::new(stream);
    read_reply(&mut reader)
}

fn read_line(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    if line.is_empty() {
        return Err("connection closed".into());
    }
    Ok(line.trim_end_matches("\r\n").to_owned())
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | ":" => Ok(Reply::Text(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        "$" => {
            let len: i64 = rest
                .parse()
                .map_err(|_| format!("bad bulk length {rest}"))?;
            let Ok(len) = usize::try_from(len) else {
                return Ok(Reply::Nil);
            };
            let mut buf = vec![0u8; len + 2];
            reader
                .read_exact(&mut buf)
                .map_err(|e| format!("read bulk: {e}"))?;
            buf.truncate(len);
            Ok(Reply::Text(String::from_utf8_lossy(&buf).into_owned()))
        }
        "*" => {
            let len: i64 = rest
                .parse()
                .map_err(|_| format!("bad array length {rest}"))?;
            let Ok(len) = usize::try_from(len) else {
                return Ok(Reply::Nil);
            };
            (0..len)
                .map(|_| read_reply(reader))
                .collect::<Result<_, _>>()
                .map(Reply::Array)
        }
        other => Err(format!("unexpected RESP type {other:?}")),
    }
}

/// Sends a command and requires a non-error reply; returns it as text.
pub fn ok(port: u16, args: &[&str]) -> Result<String, String> {
    match command(port, args)? {
        Reply::Text(text) => Ok(text),
        Reply::Error(e) => Err(format!("{} on :{port}: {e}", args.join(" "))),
        other => Ok(format!("{other:?}")),
    }
}
