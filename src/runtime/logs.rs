//! Container logs: docker's json-file format, one JSON object per line:
//! `{"log":"text\n","stream":"stdout","time":"2026-01-01T00:00:00.000000000Z"}`.
//!
//! `containers/<id>/log.json` is capped at a size ([`MAX_SIZE`] unless the container's
//! `[retention.logs]` says otherwise, see [`LogPolicy`]); past it, the files are shifted
//! (`log.json` → `log.json.1` → `log.json.2` …) and the oldest beyond `max_files` is dropped,
//! so a container never holds more than `max_files` × `max_size`; opening the log with a
//! smaller `max_files` than before removes the rotated files beyond it. [`Follower`] is the
//! one reader of a growing log (`logs -f`, `start -a` of a detached run), across rotations.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{LogPolicy, MAX_SIZE};
use crate::util::rfc3339;

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

/// A log holds what the container printed: readable by root and the root group only.
const LOG_MODE: u32 = 0o640;

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
        // A policy that keeps fewer files than the last one: the rotated files beyond it go.
        remove_beyond(path, files)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(LOG_MODE)
            .open(path)?;
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
        // The entry's end, the same for every line of the chunk.
        let tail = format!(
            "\",\"stream\":\"{}\",\"time\":\"{time}\"}}\n",
            stream.name()
        );
        let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 96);
        let mut entry = Vec::with_capacity(256);
        for line in data.split_inclusive(|&b| b == b'\n') {
            entry.clear();
            entry.extend_from_slice(b"{\"log\":\"");
            push_json_str(&mut entry, &String::from_utf8_lossy(line));
            entry.extend_from_slice(tail.as_bytes());
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
            .mode(LOG_MODE)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Chunks a [`LogThread`] holds before the relay waits for it (2 MiB of 32 KiB reads).
const LOG_QUEUE: usize = 64;

/// A [`LogWriter`] on a thread of its own, so the log is off the relay's hot path: the
/// relay writes the terminal first, then hands the chunk over a bounded channel and goes on.
/// It waits only when the writer is [`LOG_QUEUE`] chunks behind (json-file's blocking mode:
/// the log loses nothing). The thread lives for one run: the container's init is forked
/// from a single-threaded monitor.
pub struct LogThread {
    tx: Option<std::sync::mpsc::SyncSender<(Stream, Vec<u8>)>>,
    handle: Option<std::thread::JoinHandle<LogWriter>>,
}

impl LogThread {
    pub fn spawn(mut w: LogWriter) -> io::Result<LogThread> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Stream, Vec<u8>)>(LOG_QUEUE);
        let handle = std::thread::Builder::new()
            .name("log".into())
            .spawn(move || {
                let mut failed = false;
                for (stream, data) in rx {
                    if let Err(e) = w.write(stream, &data)
                        && !failed
                    {
                        failed = true;
                        tracing::warn!("cannot write the log: {e}");
                    }
                }
                w
            })?;
        Ok(LogThread {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    pub fn write(&self, stream: Stream, data: &[u8]) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((stream, data.to_vec()));
        }
    }

    /// Waits for the thread to write what it was given; returns the writer for the next run.
    pub fn finish(mut self) -> Option<LogWriter> {
        self.tx = None;
        self.handle.take().and_then(|h| h.join().ok())
    }
}

impl Drop for LogThread {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// `s` escaped as a JSON string's contents, as serde_json escapes it (the entries are
/// written by hand: per line, serde's struct serialization was the relay's bottleneck).
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&b[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(short);
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
}

/// Removes `log.json.N` for every N ≥ `files` (the current file counts as one of `files`).
fn remove_beyond(path: &Path, files: u32) -> io::Result<()> {
    let mut n = files.max(1);
    while n <= 1000 {
        match fs::remove_file(rotated_n(path, n)) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

/// Reads a log as it grows, across rotations: it keeps the file it reads open, so when the
/// writer renames it to `log.json.1` the follower first reads what was added to it, then
/// goes on from the start of the new `log.json`. A file truncated in place (`max_files = 1`)
/// is read again from its start.
pub struct Follower {
    path: PathBuf,
    opts: ReadOptions,
    /// The file being read, and its inode; None until it exists.
    file: Option<(BufReader<File>, u64)>,
    /// Bytes of complete lines read from `file`.
    pos: u64,
}

impl Follower {
    /// Follows `path` from `offset` (what [`print`] returned: the lines before it are
    /// printed).
    pub fn new(path: &Path, offset: u64, opts: ReadOptions) -> Follower {
        Follower {
            path: path.to_path_buf(),
            opts,
            file: None,
            pos: offset,
        }
    }

    /// Prints every complete line added since the last poll; a partial last line waits for
    /// its end.
    pub fn poll(&mut self, out: &mut impl Write, err: &mut impl Write) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        loop {
            if self.file.is_none() {
                match File::open(&self.path) {
                    Ok(f) => {
                        let ino = f.metadata()?.ino();
                        self.file = Some((BufReader::new(f), ino));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            // Which file the path names now, before reading: if the writer has rotated ours
            // away, it has written to it for the last time, and the read below takes the rest.
            let now = match fs::metadata(&self.path) {
                Ok(m) => Some(m.ino()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            self.drain(out, err)?;
            match &self.file {
                Some((_, ino)) if now.is_some_and(|n| n != *ino) => {
                    self.file = None;
                    self.pos = 0;
                }
                _ => return Ok(()),
            }
        }
    }

    /// Seeks the open file to `pos`, or to 0 if it is shorter (truncated in place).
    fn seek_to_pos(&mut self) -> io::Result<()> {
        if let Some((r, _)) = &mut self.file {
            let len = r.get_ref().metadata()?.len();
            if len < self.pos {
                self.pos = 0;
            }
            r.seek(SeekFrom::Start(self.pos))?;
        }
        Ok(())
    }

    fn drain(&mut self, out: &mut impl Write, err: &mut impl Write) -> io::Result<()> {
        self.seek_to_pos()?;
        let Some((reader, _)) = &mut self.file else {
            return Ok(());
        };
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                break; // a partial line is printed once complete
            }
            self.pos += n as u64;
            print_entry(line.trim_end(), self.opts, out, err);
        }
        let _ = out.flush();
        let _ = err.flush();
        Ok(())
    }
}

/// `logs -f` and `start -a` of a detached container: prints what `path` gets from `offset`
/// on, every `interval`, until `running()` says the run is over; then reads once more (the
/// monitor writes the tail before it records the exit) and returns.
pub fn follow(
    path: &Path,
    offset: u64,
    opts: ReadOptions,
    interval: std::time::Duration,
    running: impl FnMut() -> bool,
) -> io::Result<()> {
    let stdout = io::stdout();
    let stderr = io::stderr();
    follow_into(
        path,
        offset,
        opts,
        interval,
        running,
        &mut stdout.lock(),
        &mut stderr.lock(),
    )
}

fn follow_into(
    path: &Path,
    offset: u64,
    opts: ReadOptions,
    interval: std::time::Duration,
    mut running: impl FnMut() -> bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> io::Result<()> {
    let mut f = Follower::new(path, offset, opts);
    loop {
        let still = running();
        f.poll(out, err)?;
        if !still {
            return f.poll(out, err);
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_the_json_serde_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let mut w = LogWriter::open(&p).unwrap();
        let mut data: Vec<u8> = (0u8..=0x7f).collect();
        data.extend_from_slice("é ü 日本 \\ \" end\n".as_bytes());
        data.extend_from_slice(b"bad \xff\xfe utf8\n");
        w.write(Stream::Stderr, &data).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut logged = String::new();
        for l in &lines {
            let e: Entry<'_> = serde_json::from_str(l).unwrap();
            assert_eq!(e.stream, "stderr");
            // Byte for byte what serde_json makes of the same entry.
            let again = Entry {
                log: e.log.clone(),
                stream: e.stream.clone(),
                time: e.time.clone(),
            };
            assert_eq!(serde_json::to_string(&again).unwrap(), *l);
            logged.push_str(&e.log);
        }
        assert_eq!(logged, String::from_utf8_lossy(&data));
    }

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

    #[test]
    fn shrinking_max_files_removes_the_extra_rotated_logs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let policy = |files| LogPolicy {
            max_size: Some(100),
            max_files: Some(files),
        };
        let mut w = LogWriter::with_policy(&p, policy(5)).unwrap();
        for i in 0..20 {
            w.write(Stream::Stdout, format!("line {i:02}\n").as_bytes())
                .unwrap();
        }
        drop(w);
        assert_eq!(log_files(&p).len(), 5);
        let mut w = LogWriter::with_policy(&p, policy(2)).unwrap();
        assert_eq!(log_files(&p), [rotated_n(&p, 1), p.clone()]);
        for i in 20..30 {
            w.write(Stream::Stdout, format!("line {i:02}\n").as_bytes())
                .unwrap();
        }
        assert_eq!(log_files(&p).len(), 2);
        drop(w);
        LogWriter::with_policy(&p, policy(1)).unwrap();
        assert_eq!(log_files(&p), std::slice::from_ref(&p));
    }

    fn lines_of(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out)
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_follower_reads_every_line_once_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let mut w = LogWriter::with_policy(
            &p,
            LogPolicy {
                max_size: Some(400),
                max_files: Some(3),
            },
        )
        .unwrap();
        w.write(Stream::Stdout, b"before\n").unwrap();
        let offset = fs::metadata(&p).unwrap().len();
        let mut f = Follower::new(&p, offset, ReadOptions::default());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut want = Vec::new();
        for i in 0..60 {
            let line = format!("line {i:02}");
            let stream = if i % 7 == 0 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            w.write(stream, format!("{line}\n").as_bytes()).unwrap();
            if stream == Stream::Stdout {
                want.push(line);
            }
            // A poll every third line: the writer rotates (about five entries a file) in
            // between, after writing lines the follower has not read yet.
            if i % 3 == 2 {
                f.poll(&mut out, &mut err).unwrap();
            }
        }
        w.write(Stream::Stdout, b"partial").unwrap();
        f.poll(&mut out, &mut err).unwrap();
        assert!(rotated_n(&p, 2).exists(), "the writer rotated");
        want.push("partial".into());
        assert_eq!(lines_of(&out), want);
        assert_eq!(lines_of(&err).len(), 9, "{:?}", lines_of(&err));
        // Nothing new: nothing printed twice.
        f.poll(&mut out, &mut err).unwrap();
        assert_eq!(lines_of(&out).len(), want.len());
    }

    #[test]
    fn follow_ends_with_the_run_and_prints_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        let mut w = LogWriter::with_policy(&p, LogPolicy::default()).unwrap();
        let mut calls = 0;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        follow_into(
            &p,
            0,
            ReadOptions::default(),
            std::time::Duration::from_millis(1),
            || {
                calls += 1;
                w.write(Stream::Stdout, format!("run {calls}\n").as_bytes())
                    .unwrap();
                if calls < 4 {
                    return true;
                }
                // The run ends: the monitor writes its tail, then records the exit.
                w.write(Stream::Stdout, b"tail\n").unwrap();
                false
            },
            &mut out,
            &mut err,
        )
        .unwrap();
        assert_eq!(lines_of(&out), ["run 1", "run 2", "run 3", "run 4", "tail"]);
    }
}
