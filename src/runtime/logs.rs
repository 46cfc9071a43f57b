//! Container logs: docker's json-file format, one JSON object per line:
//! `{"log":"text\n","stream":"stdout","time":"2026-01-01T00:00:00.000000000Z"}`.
//!
//! `containers/<id>/log.json` is capped at [`MAX_SIZE`]; past it, the file is rotated to
//! `log.json.1` (one old file kept), so a container never holds more than twice the cap.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::util::rfc3339;

/// Bytes per log file before rotation.
pub const MAX_SIZE: u64 = 10 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    log: std::borrow::Cow<'a, str>,
    stream: std::borrow::Cow<'a, str>,
    time: String,
}

/// Appends to a container's log, rotating at the cap.
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

impl LogWriter {
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        Self::with_max(path, MAX_SIZE)
    }

    pub fn with_max(path: &Path, max: u64) -> io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max,
        })
    }

    /// Writes `data` as one entry per line (a trailing partial line is its own entry).
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let time = rfc3339(crate::store::now_ns());
        let mut out = Vec::with_capacity(data.len() + 96);
        for line in data.split_inclusive(|&b| b == b'\n') {
            let e = Entry {
                log: String::from_utf8_lossy(line),
                stream: stream.name().into(),
                time: time.clone(),
            };
            serde_json::to_writer(&mut out, &e).map_err(io::Error::other)?;
            out.push(b'\n');
        }
        if self.size > 0 && self.size + out.len() as u64 > self.max {
            self.rotate()?;
        }
        self.file.write_all(&out)?;
        self.size += out.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(&self.path, rotated(&self.path))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// How to print logs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    pub tail: Option<usize>,
    pub timestamps: bool,
}

fn print_entry(line: &str, opts: ReadOptions, out: &mut impl Write, err: &mut impl Write) {
    let Ok(e) = serde_json::from_str::<Entry<'_>>(line) else {
        return;
    };
    let w: &mut dyn Write = if e.stream == "stderr" { err } else { out };
    if opts.timestamps {
        let _ = write!(w, "{} ", e.time);
    }
    let _ = w.write_all(e.log.as_bytes());
}

/// Prints the log (old file, then current) to stdout/stderr by stream; returns the offset
/// reached in the current file, for following.
pub fn print(path: &Path, opts: ReadOptions) -> io::Result<u64> {
    let mut lines = Vec::new();
    for p in [rotated(path), path.to_path_buf()] {
        match File::open(&p) {
            Ok(f) => {
                for l in BufReader::new(f).lines() {
                    lines.push(l?);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let skip = opts.tail.map_or(0, |n| lines.len().saturating_sub(n));
    let stdout = io::stdout();
    let stderr = io::stderr();
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    for l in &lines[skip..] {
        print_entry(l, opts, &mut out, &mut err);
    }
    let _ = out.flush();
    Ok(fs::metadata(path).map(|m| m.len()).unwrap_or(0))
}

/// Prints what was appended since `offset`; returns the new offset. A rotation (the file
/// got shorter) restarts at 0.
pub fn print_from(path: &Path, offset: u64, opts: ReadOptions) -> io::Result<u64> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(offset),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = if len < offset { 0 } else { offset };
    if len == start {
        return Ok(start);
    }
    f.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::new(f);
    let mut pos = start;
    let stdout = io::stdout();
    let stderr = io::stderr();
    let (mut out, mut err) = (stdout.lock(), stderr.lock());
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            break; // a partial line is printed once complete
        }
        pos += n as u64;
        print_entry(line.trim_end(), opts, &mut out, &mut err);
    }
    let _ = out.flush();
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let mut w = LogWriter::with_max(&p, 400).unwrap();
        w.write(Stream::Stdout, b"a\nb\n").unwrap();
        w.write(Stream::Stderr, b"\"quoted\"").unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.contains(r#""log":"\"quoted\"","stream":"stderr""#),
            "{text}"
        );
        for _ in 0..10 {
            w.write(Stream::Stdout, b"0123456789\n").unwrap();
        }
        assert!(rotated(&p).exists());
        assert!(fs::metadata(&p).unwrap().len() <= 400);
    }
}
