//! Scalar values with a syntax of their own: sizes, durations, restart policies, volume specs,
//! names, capabilities and cpusets.
//!
//! Each one is a newtype with its own `Deserialize` and `JsonSchema`. The parse function is
//! shared with the span-aware checker in [`super::check`], so an editor, `wharf validate` and
//! the loader all accept exactly the same strings.
//!
//! # Sizes
//! A size is a TOML integer (bytes) or a string: a decimal number (`"256"`, `"1.5"`), optional
//! whitespace-free unit, case-insensitive. Every unit is binary, as in docker's `--memory`:
//!
//! | unit | factor |
//! |---|---|
//! | (none), `b` | 1 |
//! | `k`, `kb`, `kib` | 1024 |
//! | `m`, `mb`, `mib` | 1024² |
//! | `g`, `gb`, `gib` | 1024³ |
//! | `t`, `tb`, `tib` | 1024⁴ |
//! | `p`, `pb`, `pib` | 1024⁵ |
//!
//! This is the grammar of docker's `--memory` (and of wharf's `-m`): one parser,
//! [`crate::util::parse_size`], reads sizes everywhere. So `"64m"`, `"64MB"` and `"64MiB"` are all 67108864 bytes. A fraction is rounded down to a
//! whole byte (`"1.5k"` = 1536).
//!
//! # Durations
//! humantime's syntax: `"90s"`, `"5m"`, `"1h 30m"`, `"7d"`, `"250ms"`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::util::SIZE_HINT;

/// A problem with one value: what is wrong, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub message: String,
    pub hint: Option<String>,
}

impl ValueError {
    fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        ValueError {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

const KIB: u64 = 1024;

/// Parses a size string (see the module docs) into bytes: [`crate::util::parse_size`], the one
/// size grammar of wharf, with its error as a [`ValueError`].
pub fn parse_size(input: &str) -> Result<u64, ValueError> {
    crate::util::parse_size(input).map_err(|e| ValueError::new(e.message(input), e.hint))
}

/// Renders bytes with the largest binary unit that divides them exactly: `64MiB`, `1536B`.
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in [
        ("TiB", KIB.pow(4)),
        ("GiB", KIB.pow(3)),
        ("MiB", KIB.pow(2)),
        ("KiB", KIB),
    ] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

/// Parses a humantime duration.
pub fn parse_duration(input: &str) -> Result<Duration, ValueError> {
    humantime::parse_duration(input).map_err(|e| {
        ValueError::new(
            format!("invalid duration {input:?}: {e}"),
            "write a number with a unit, e.g. \"90s\", \"5m\", \"1h 30m\", \"7d\"",
        )
    })
}

/// Checks a container or volume name the way docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check_name(input: &str) -> Result<(), ValueError> {
    if crate::names::docker_name_ok(input, usize::MAX) {
        Ok(())
    } else {
        Err(ValueError::new(
            format!("invalid name {input:?}"),
            "names are 2 or more characters: a letter or digit, then letters, digits, '_', '.' or '-'",
        ))
    }
}

/// Checks a container or volume name by [`crate::names::check`], the rule `run --name` and
/// `volume create` apply, so `validate` passes exactly what create accepts.
pub fn check_object_name(kind: crate::names::NameKind, input: &str) -> Result<(), ValueError> {
    crate::names::check(kind, input).map_err(|e| ValueError::new(e.message, e.hint))
}

/// Checks a cpuset list such as `0-3,6`.
pub fn check_cpuset(input: &str) -> Result<(), ValueError> {
    let part_ok = |p: &str| match p.split_once('-') {
        Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
            (Ok(a), Ok(b)) => a <= b,
            _ => false,
        },
        None => p.parse::<u32>().is_ok(),
    };
    if !input.is_empty() && input.split(',').all(part_ok) {
        Ok(())
    } else {
        Err(ValueError::new(
            format!("invalid cpuset {input:?}"),
            "write CPU numbers and ranges separated by commas, e.g. \"0-3\" or \"0,2,4-5\"",
        ))
    }
}

/// Normalizes a capability name: `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` are all
/// `CAP_NET_ADMIN`; `ALL` stays `ALL`.
pub fn normalize_capability(input: &str) -> Result<String, ValueError> {
    let up = input.to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    match caps::Capability::from_str(&full) {
        Ok(_) => Ok(full),
        Err(_) => Err(ValueError::new(
            format!("unknown capability {input:?}"),
            "write a Linux capability such as \"NET_ADMIN\" or \"CAP_SYS_TIME\", or \"ALL\" (see capabilities(7))",
        )),
    }
}

macro_rules! string_schema {
    ($ty:ty, $name:literal, $schema:tt) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// A number of bytes, written as a TOML integer or a size string (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(self.0))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrStr {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IntOrStr::deserialize(d)? {
            IntOrStr::Int(n) => u64::try_from(n)
                .map(ByteSize)
                .map_err(|_| serde::de::Error::custom("a size cannot be negative")),
            IntOrStr::Str(s) => parse_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

string_schema!(ByteSize, "ByteSize", {
    "description": "A size in bytes: an integer, or a string with a binary unit (k, m, g, t, p; \"kb\"/\"kib\" etc. mean the same; all are powers of 1024), e.g. \"512k\", \"64MiB\", \"1G\".",
    "type": ["string", "integer"],
    "minimum": 0,
    "pattern": "^[0-9]+(\\.[0-9]+)?([kKmMgGtTpP]([iI]?[bB])?|[bB])?$",
    "examples": ["256MiB", "1G", "64m", "512k"]
});

/// A swap limit: a size, or `-1` / `"unlimited"` for unlimited swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapLimit {
    Bytes(u64),
    Unlimited,
}

impl SwapLimit {
    /// The value cgroups want: bytes, or -1 for unlimited.
    pub fn as_i64(self) -> i64 {
        match self {
            SwapLimit::Bytes(b) => i64::try_from(b).unwrap_or(i64::MAX),
            SwapLimit::Unlimited => -1,
        }
    }
}

pub fn parse_swap(input: &str) -> Result<SwapLimit, ValueError> {
    if input.eq_ignore_ascii_case("unlimited") || input == "-1" {
        return Ok(SwapLimit::Unlimited);
    }
    parse_size(input).map(SwapLimit::Bytes).map_err(|mut e| {
        e.hint = Some(format!("{SIZE_HINT}, or \"unlimited\""));
        e
    })
}

impl Serialize for SwapLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SwapLimit::Bytes(b) => s.serialize_str(&format_size(*b)),
            SwapLimit::Unlimited => s.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for SwapLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match IntOrStr::deserialize(d)? {
            IntOrStr::Int(-1) => Ok(SwapLimit::Unlimited),
            IntOrStr::Int(n) => u64::try_from(n)
                .map(SwapLimit::Bytes)
                .map_err(|_| serde::de::Error::custom("a swap limit is a size, or -1")),
            IntOrStr::Str(s) => parse_swap(&s).map_err(serde::de::Error::custom),
        }
    }
}

string_schema!(SwapLimit, "SwapLimit", {
    "description": "Memory plus swap: a size like \"512MiB\" (at least the memory limit), or \"unlimited\" / -1 for unlimited swap.",
    "type": ["string", "integer"],
    "minimum": -1,
    "examples": ["512MiB", "unlimited"]
});

/// A duration in humantime syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

string_schema!(HumanDuration, "Duration", {
    "description": "A duration in humantime syntax: a number and a unit (ns, us, ms, s, m, h, d, w, M, y), parts may be combined, e.g. \"90s\", \"1h 30m\", \"7d\".",
    "type": "string",
    "examples": ["90s", "5m", "7d"]
});

pub use crate::model::RestartPolicy;

/// [`crate::model::parse_restart`], as a manifest value.
pub fn parse_restart(input: &str) -> Result<RestartPolicy, ValueError> {
    crate::model::parse_restart(input).map_err(|e| ValueError {
        message: e.message,
        hint: e.hint,
    })
}

string_schema!(RestartPolicy, "RestartPolicy", {
    "description": "When the container's monitor restarts it: \"no\", \"on-failure\" or \"on-failure:N\" (at most N restarts), \"always\", or \"unless-stopped\".",
    "type": "string",
    "pattern": "^(no|always|unless-stopped|on-failure(:[0-9]+)?)$",
    "examples": ["no", "on-failure:5", "always", "unless-stopped"]
});

/// Where a volume's data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeSource {
    /// A named volume, declared under `[volumes]`.
    Named(String),
    /// A host path: absolute, or `./`/`../` relative to the manifest file (resolved by the
    /// loader).
    Bind(String),
}

/// A volume mount: `name:/path[:ro]`, `./rel:/path[:ro]` or `/abs:/path[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeSpec {
    pub source: VolumeSource,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

const VOLUME_HINT: &str = "write \"NAME:/path\" for a named volume, \"./dir:/path\" or \"/host/dir:/path\" for a bind mount, and add \":ro\" for read-only";

pub fn parse_volume(input: &str) -> Result<VolumeSpec, ValueError> {
    let parts: Vec<&str> = input.split(':').collect();
    let (src, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, None),
        [s, t, m] => (*s, *t, Some(*m)),
        _ => {
            return Err(ValueError::new(
                format!("invalid volume {input:?}: expected SOURCE:TARGET[:ro]"),
                VOLUME_HINT,
            ));
        }
    };
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => {
            return Err(ValueError::new(
                format!("invalid volume {input:?}: unknown mode {m:?}"),
                "the mode after the target is \"ro\" (read-only) or \"rw\" (the default)",
            ));
        }
    };
    if !target.starts_with('/') || target == "/" {
        return Err(ValueError::new(
            format!(
                "invalid volume {input:?}: the target {target:?} must be an absolute path other than /"
            ),
            VOLUME_HINT,
        ));
    }
    if let Err(why) = crate::model::check_mount_destination(target) {
        return Err(ValueError::new(
            format!("invalid volume {input:?}: {why}"),
            "mount somewhere else, e.g. under /mnt or /srv",
        ));
    }
    let source = if src.starts_with('/') || src.starts_with("./") || src.starts_with("../") {
        VolumeSource::Bind(src.to_string())
    } else if src.is_empty() {
        return Err(ValueError::new(
            format!("invalid volume {input:?}: the source is empty"),
            VOLUME_HINT,
        ));
    } else {
        check_name(src).map_err(|_| {
            ValueError::new(
                format!("invalid volume {input:?}: {src:?} is neither a volume name nor a path"),
                "a relative bind mount starts with \"./\"; a volume name is letters, digits, '_', '.' and '-'",
            )
        })?;
        check_object_name(crate::names::NameKind::Volume, src).map_err(|e| {
            ValueError::new(
                format!("invalid volume {input:?}: {}", e.message),
                e.hint.unwrap_or_default(),
            )
        })?;
        VolumeSource::Named(src.to_string())
    };
    Ok(VolumeSpec {
        source,
        target: target.to_string(),
        read_only,
    })
}

impl fmt::Display for VolumeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let src = match &self.source {
            VolumeSource::Named(n) => n,
            VolumeSource::Bind(p) => p,
        };
        write!(f, "{src}:{}", self.target)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

impl Serialize for VolumeSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for VolumeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_volume(&s).map_err(serde::de::Error::custom)
    }
}

string_schema!(VolumeSpec, "VolumeSpec", {
    "description": "A mount: \"NAME:/path\" (a volume declared under [volumes]), \"./dir:/path\" (relative to this file) or \"/host/dir:/path\" (a bind mount); append \":ro\" for read-only.",
    "type": "string",
    "pattern": "^[^:]+:/[^:]*(:(ro|rw))?$",
    "examples": ["data:/var/lib/app", "./conf:/etc/app:ro"]
});

/// Defines a string newtype with a JSON Schema definition of its own name, so the checker can
/// attach a semantic check to it.
macro_rules! string_newtype {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $schema:tt) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $ty(pub String);

        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        string_schema!($ty, $name, $schema);
    };
}

string_newtype!(
    /// A tmpfs mount (`/run`, `/cache:size=64m,mode=1777`).
    TmpfsSpec,
    "Tmpfs",
    {
        "description": "A tmpfs mounted in the container: an absolute path, then optional ':' and comma-separated options (size=64m, mode=1777, uid=, gid=, nr_inodes=, ro, exec, suid). noexec,nosuid,nodev by default.",
        "type": "string",
        "pattern": "^/",
        "examples": ["/run", "/cache:size=64m,mode=1777"]
    }
);

string_newtype!(
    /// A signal name or number (`SIGTERM`, `USR1`, `15`).
    SignalName,
    "Signal",
    {
        "description": "A signal: a name with or without SIG (\"SIGQUIT\", \"USR1\") or a number.",
        "type": "string",
        "minLength": 1,
        "examples": ["SIGQUIT", "SIGUSR1"]
    }
);

string_newtype!(
    /// A host device given to the container (`/dev/fuse`, `/dev/sdb:/dev/xvdb:r`).
    DeviceSpec,
    "Device",
    {
        "description": "A host device node: /dev/HOST[:/dev/IN_CONTAINER][:PERMISSIONS], permissions some of r, w, m (default rwm).",
        "type": "string",
        "pattern": "^/",
        "examples": ["/dev/fuse", "/dev/sdb:/dev/xvdb:r"]
    }
);

string_newtype!(
    /// A published port, docker's `-p` syntax (`8080:80`, `127.0.0.1:5353:53/udp`).
    PortMapping,
    "Port",
    {
        "description": "A published port: [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp], ranges as 8000-8009:80-89; without a host port, a free one is picked at each start.",
        "type": "string",
        "minLength": 1,
        "examples": ["8080:80", "127.0.0.1:5353:53/udp"]
    }
);

string_newtype!(
    /// An IPv4 subnet in CIDR form (`10.89.7.0/24`).
    Subnet,
    "Subnet",
    {
        "description": "An IPv4 subnet in CIDR form, /30 or larger.",
        "type": "string",
        "pattern": "^[0-9.]+/[0-9]+$",
        "examples": ["10.89.7.0/24"]
    }
);

string_newtype!(
    /// An image reference (`name[:tag]`, `name@sha256:...`, or an image id).
    ImageRef,
    "ImageRef",
    {
        "description": "An image reference: the tag of an [images] section or of an image already in the store (\"app:1.1\"; the tag defaults to \"latest\"), name@sha256:<digest>, or an image id.",
        "type": "string",
        "minLength": 1,
        "examples": ["app:1.1"]
    }
);

string_newtype!(
    /// The tag an imported image gets (`name[:tag]`).
    ImageTag,
    "ImageTag",
    {
        "description": "The reference the imported image is tagged with: lowercase name, optional \":tag\" (default \"latest\").",
        "type": "string",
        "minLength": 1,
        "examples": ["app:1.1"]
    }
);

string_newtype!(
    /// An image in a registry (`host[:port]/name:tag`, `name@sha256:...`).
    RegistryRef,
    "RegistryRef",
    {
        "description": "An image in a registry: [host[:port]/]name[:tag] with docker's normalisation (\"alpine\" is docker.io/library/alpine:latest), or name@sha256:<digest>.",
        "type": "string",
        "minLength": 1,
        "examples": ["127.0.0.1:5000/team/web:1.4", "alpine@sha256:0000000000000000000000000000000000000000000000000000000000000000"]
    }
);

string_newtype!(
    /// A path to a file, relative to the manifest file that names it.
    RelPath,
    "RelativeFile",
    {
        "description": "A path to an existing file, relative to the directory of the manifest file (absolute paths are allowed too).",
        "type": "string",
        "minLength": 1
    }
);

string_newtype!(
    /// A Linux capability name.
    CapabilityName,
    "Capability",
    {
        "description": "A Linux capability, with or without the CAP_ prefix, any case (\"NET_ADMIN\", \"cap_sys_time\"), or \"ALL\".",
        "type": "string",
        "pattern": "^([Cc][Aa][Pp]_)?[A-Za-z_]+$",
        "examples": ["NET_ADMIN", "SYS_TIME", "ALL"]
    }
);

string_newtype!(
    /// A CPU list such as `0-3,6`.
    CpuSet,
    "CpuSet",
    {
        "description": "CPUs the container may run on: numbers and ranges separated by commas, e.g. \"0-3\" or \"0,2\".",
        "type": "string",
        "pattern": "^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$",
        "examples": ["0-1", "0,2"]
    }
);

string_newtype!(
    /// An absolute path inside the container.
    AbsPath,
    "AbsolutePath",
    {
        "description": "An absolute path inside the container.",
        "type": "string",
        "pattern": "^/",
        "examples": ["/app"]
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary() {
        for (s, n) in [
            ("0", 0),
            ("512", 512),
            ("512b", 512),
            ("512k", 512 * 1024),
            ("512KiB", 512 * 1024),
            ("64m", 64 << 20),
            ("64MB", 64 << 20),
            ("256MiB", 256 << 20),
            ("1G", 1 << 30),
            ("1gib", 1 << 30),
            ("2T", 2 << 40),
            ("1.5k", 1536),
            ("0.5G", 512 << 20),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        for s in [
            "",
            "k",
            "12Q",
            "1.2.3m",
            "-1",
            "1 G",
            "1.m",
            "99999999999999999999",
        ] {
            let e = parse_size(s).expect_err(s);
            assert!(e.message.contains("invalid size"), "{s}: {}", e.message);
            assert!(e.hint.is_some());
        }
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(3 << 30), "3GiB");
        assert_eq!(format_size(0), "0B");
    }

    #[test]
    fn restart_policies_round_trip() {
        for s in [
            "no",
            "on-failure",
            "on-failure:3",
            "always",
            "unless-stopped",
        ] {
            assert_eq!(parse_restart(s).unwrap().to_string(), s);
        }
        for s in [
            "",
            "On-failure",
            "on-failure:",
            "on-failure:-1",
            "sometimes",
        ] {
            assert!(parse_restart(s).is_err(), "{s}");
        }
    }

    #[test]
    fn volume_specs() {
        let v = parse_volume("data:/var/lib/app").unwrap();
        assert_eq!(v.source, VolumeSource::Named("data".into()));
        assert!(!v.read_only);
        let v = parse_volume("./conf:/etc/app:ro").unwrap();
        assert_eq!(v.source, VolumeSource::Bind("./conf".into()));
        assert!(v.read_only);
        assert_eq!(v.to_string(), "./conf:/etc/app:ro");
        assert!(parse_volume("/abs:/x").is_ok());
        for s in [
            "data",
            "data:rel",
            "data:/x:rx",
            ":/x",
            "a b:/x",
            "data:/",
            "a:/b:ro:x",
        ] {
            assert!(parse_volume(s).is_err(), "{s}");
        }
    }

    #[test]
    fn mount_destinations_runc_refuses() {
        for bad in [
            "/proc",
            "/proc/",
            "/proc/sys",
            "//proc",
            "/tmp/../proc/1",
            "/sys",
            "/dev/",
            "/",
            "/..",
        ] {
            assert!(crate::model::check_mount_destination(bad).is_err(), "{bad}");
        }
        for good in [
            "/dev/shm",
            "/sys/fs/x",
            "/proc/cpuinfo",
            "/proc/net/dev",
            "/srv",
            "/procfs",
        ] {
            assert!(
                crate::model::check_mount_destination(good).is_ok(),
                "{good}"
            );
        }
        assert!(parse_volume("./d:/proc/self").is_err());
        assert!(parse_volume("./d:/dev/shm").is_ok());
    }

    #[test]
    fn names_caps_cpusets_durations() {
        assert!(check_name("web").is_ok());
        assert!(check_name("w").is_err());
        assert!(check_name("_web").is_err());
        assert!(check_name("we b").is_err());
        assert_eq!(normalize_capability("net_admin").unwrap(), "CAP_NET_ADMIN");
        assert_eq!(
            normalize_capability("CAP_SYS_TIME").unwrap(),
            "CAP_SYS_TIME"
        );
        assert_eq!(normalize_capability("all").unwrap(), "ALL");
        assert!(normalize_capability("NET_ADMINN").is_err());
        assert!(check_cpuset("0-3,6").is_ok());
        assert!(check_cpuset("3-1").is_err());
        assert!(check_cpuset("").is_err());
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("7 parsecs").is_err());
    }
}
