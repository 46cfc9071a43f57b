//! Container logs: docker's json-file format, one JSON object per line:
//! `{"log":"text\n","stream":"stdout","time":"2026-01-01T00:00:00.000000000Z"}`.
//!
//! `containers/<id>/log.json` is capped at a size ([`MAX_SIZE`] unless the container's
//! `[retention.logs]` says otherwise, see [`LogPolicy`]); past it, the files are shifted
//! (`log.json` → `log.json.1` → `log.json.2` …) and the oldest beyond `max_files` is dropped,
//! so a container never holds more than `max_files` × `max_size`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::util::rfc3339;

/// Bytes per log file before rotation.
pub const MAX_SIZE: u64 = 10 << 20;

/// Log files per container (the current one included) by default.
pub const MAX_FILES: u32 = 2;

/// A container's log rotation (`[retention.logs]`); unset fields take the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPolicy {
    pub max_size: Option<u64>,
    pub max_files: Option<u32>,
}

impl LogPolicy {
    /// A container's own `--log-opt`s (`self`) over the policy `base` (retention's: the
    /// project's `[retention.logs]`, else the root config's), field by field.
    pub fn over(self, base: LogPolicy) -> LogPolicy {
        LogPolicy {
            max_size: self.max_size.or(base.max_size),
            max_files: self.max_files.or(base.max_files),
        }
    }

    /// docker's `--log-opt max-size=10m` / `max-file=3` (json-file's keys); others refused.
    pub fn parse_opts(opts: &[String]) -> anyhow::Result<Option<LogPolicy>> {
        if opts.is_empty() {
            return Ok(None);
        }
        let bad = |o: &str, why: &str| -> anyhow::Error {
            crate::error::user(format!("invalid --log-opt {o:?}: {why}"))
                .hint("wharf's json-file log takes max-size=SIZE (10m) and max-file=N (N >= 1)")
                .code(crate::error::exit::RUNTIME)
                .into()
        };
        let mut p = LogPolicy::default();
        for o in opts {
            match o.split_once('=') {
                Some(("max-size", v)) => {
                    p.max_size = Some(
                        crate::runtime::spec::parse_size(v).map_err(|_| bad(o, "not a size"))?,
                    )
                }
                Some(("max-file", v)) => {
                    p.max_files = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|&n| n >= 1)
                            .ok_or_else(|| bad(o, "not a number of files, at least 1"))?,
                    )
                }
                _ => return Err(bad(o, "unknown option")),
            }
        }
        Ok(Some(p))
    }

    /// (bytes per file, files), defaults filled in; at least 1 byte and 1 file.
    pub fn resolved(self) -> (u64, u32) {
        (
            self.max_size.unwrap_or(MAX_SIZE).max(1),
            self.max_files.unwrap_or(MAX_FILES).max(1),
        )
    }
}

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
    files: u32,
}

impl LogWriter {
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        Self::with_max(path, MAX_SIZE)
    }

    pub fn with_max(path: &Path, max: u64) -> io::Result<LogWriter> {
        Self::with_policy(
            path,
            LogPolicy {
                max_size: Some(max),
                max_files: None,
            },
        )
    }

    /// Opens a container's log with its rotation policy.
    pub fn with_policy(path: &Path, policy: LogPolicy) -> io::Result<LogWriter> {
        let (max, files) = policy.resolved();
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            max,
            files,
        })
    }

    /// Writes `data` as one entry per line (a trailing partial line is its own entry).
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let time = rfc3339(crate::store::now_ns());
        let mut out = Vec::with_capacity(data.len() + 96);
        let mut entry = Vec::with_capacity(256);
        for line in data.split_inclusive(|&b| b == b'\n') {
            let e = Entry {
                log: String::from_utf8_lossy(line),
                stream: stream.name().into(),
                time: time.clone(),
            };
            entry.clear();
            serde_json::to_writer(&mut entry, &e).map_err(io::Error::other)?;
            entry.push(b'\n');
            // Rotate between entries, so a burst of output respects the cap too.
            let pending = self.size + out.len() as u64;
            if pending > 0 && pending + entry.len() as u64 > self.max {
                self.file.write_all(&out)?;
                out.clear();
                self.rotate()?;
            }
            out.extend_from_slice(&entry);
        }
        self.file.write_all(&out)?;
        self.size += out.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        // Shift log.json.(k) → log.json.(k+1), dropping what falls beyond `files`.
        let keep = self.files - 1;
        if keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = fs::remove_file(rotated_n(&self.path, keep));
        for k in (1..keep).rev() {
            match fs::rename(rotated_n(&self.path, k), rotated_n(&self.path, k + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
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
    rotated_n(path, 1)
}

fn rotated_n(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// A container's log files that exist: the rotated ones, oldest first, then the current.
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut v = rotated_files(path);
    if path.exists() {
        v.push(path.to_path_buf());
    }
    v
}

/// The rotated files that exist, oldest first (`log.json.N` … `log.json.1`).
fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut n = 1;
    while n <= 1000 && rotated_n(path, n).exists() {
        out.push(rotated_n(path, n));
        n += 1;
    }
    out.reverse();
    out
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
    let mut files = rotated_files(path);
    files.push(path.to_path_buf());
    for p in files {
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

    #[test]
    fn rotation_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let policy = LogPolicy {
            max_size: Some(100),
            max_files: Some(3),
        };
        let mut w = LogWriter::with_policy(&p, policy).unwrap();
        for i in 0..20 {
            w.write(Stream::Stdout, format!("line {i:02}\n").as_bytes())
                .unwrap();
        }
        // Three files at most: log.json, .1, .2; each within the cap.
        assert!(p.exists() && rotated_n(&p, 1).exists() && rotated_n(&p, 2).exists());
        assert!(!rotated_n(&p, 3).exists());
        for f in [p.clone(), rotated_n(&p, 1), rotated_n(&p, 2)] {
            assert!(fs::metadata(&f).unwrap().len() <= 100);
        }
        // Oldest first across the files, the newest line last.
        let all: Vec<String> = rotated_files(&p)
            .into_iter()
            .chain([p.clone()])
            .flat_map(|f| {
                fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let nums: Vec<u32> = all
            .iter()
            .map(|l| {
                let i = l.find("line ").unwrap() + 5;
                l[i..i + 2].parse().unwrap()
            })
            .collect();
        assert_eq!(nums.last(), Some(&19));
        assert!(nums.windows(2).all(|w| w[0] + 1 == w[1]), "{nums:?}");
        // One file: truncated in place.
        let q = dir.path().join("one.json");
        let mut w = LogWriter::with_policy(
            &q,
            LogPolicy {
                max_size: Some(200),
                max_files: Some(1),
            },
        )
        .unwrap();
        for _ in 0..10 {
            w.write(Stream::Stdout, b"0123456789\n").unwrap();
        }
        assert!(!rotated_n(&q, 1).exists());
        assert!(fs::metadata(&q).unwrap().len() <= 200);
    }
}
