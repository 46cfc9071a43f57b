//! The manifest's TOML types. The JSON Schema in `schemas/manifest.schema.json` is generated
//! from these, doc comments included: every field's doc comment is its description.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{
    AbsPath, ByteSize, CapabilityName, CpuSet, DeviceSpec, HumanDuration, ImageRef, ImageTag,
    PortMapping, RegistryRef, RelPath, RestartPolicy, SignalName, Subnet, SwapLimit, TmpfsSpec,
    VolumeSpec,
};

/// A wharf manifest: images to import, volumes, and containers that should exist, for one
/// project. A directory of manifests merges into one project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "wharf manifest")]
pub struct ManifestFile {
    /// The project this manifest belongs to. It scopes ownership: apply only changes and
    /// removes containers and volumes labelled with it. Defaults to the file's stem, or the
    /// directory's name when a directory is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("pattern" = "^[a-zA-Z0-9][a-zA-Z0-9_.-]+$"))]
    pub project: Option<String>,

    /// Images imported from tarballs or pulled from registries, by a name of your choosing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = { "$ref": "#/definitions/Name" }))]
    pub images: BTreeMap<String, ImageSection>,

    /// Containers that should exist, by container name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = { "$ref": "#/definitions/ContainerName" }))]
    pub containers: BTreeMap<String, ContainerSection>,

    /// Named volumes, by volume name. A container mounts one with "NAME:/path".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = { "$ref": "#/definitions/VolumeName" }))]
    pub volumes: BTreeMap<String, VolumeSection>,

    /// Networks of the project, by a name of your choosing: created as `<project>_<name>`
    /// (compose's naming) unless `external`. Containers join them with `networks`; a
    /// container that names none joins `<project>_default`, made without a section.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = { "$ref": "#/definitions/Name" }))]
    pub networks: BTreeMap<String, NetworkSection>,

    /// What to keep and what to prune after each converge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// A bridge network of the project (DNS between its containers by name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// The subnet (default: the first free /24 of 10.89.0.0 to 10.127.255.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Subnet>,
    /// No outbound NAT and no published ports.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// A network made outside the project (`wharf network create NAME`), joined by its own
    /// name; apply neither creates nor removes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
}

/// An image: imported from a tarball of a root filesystem (`source`), or pulled from a
/// registry (`ref`). Exactly one of the two.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// The tarball, relative to this manifest file: a plain, gzip or zstd tar of a root
    /// filesystem. It is imported once per content digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RelPath>,
    /// The image in a registry, pulled by `apply` when the store lacks it:
    /// "host[:port]/name:tag" (docker's names: "alpine" is docker.io/library/alpine:latest),
    /// or "name@sha256:<digest>". A tag is resolved once and its digest recorded;
    /// `apply --pull` resolves it again. A digest never changes.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<RegistryRef>,
    /// The reference the image is tagged with, e.g. "app:1.1". Containers name it in `image`.
    /// Required with `source`; with `ref`, the image is also tagged with the ref's own name
    /// (as `wharf pull` tags it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<ImageTag>,
    /// The default command of the image (OCI Cmd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// The default entrypoint of the image (OCI Entrypoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Environment variables of the image.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The default working directory of the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<AbsPath>,
}

/// Whether a container should be running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    /// Created and started (the default).
    #[default]
    Running,
    /// Created but not running.
    Stopped,
}

/// The container's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// Its own network namespace with only loopback.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// The project's bridge networks (`networks`, else `<project>_default`).
    Bridge,
}

/// A container that should exist.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerSection {
    /// The image: the tag of an [images] section, or of an image already in the store.
    pub image: ImageRef,
    /// The command, replacing the image's Cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The entrypoint, replacing the image's Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Environment variables; they override the image's and env_file's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A file of KEY=VALUE lines (# comments), relative to this manifest file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<RelPath>,
    /// The hostname inside the container (default: the short container id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The user to run as: "name", "uid" or "uid:gid".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The working directory, replacing the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<AbsPath>,
    /// The restart policy, carried out by the container's monitor (default "no").
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Mounts: "NAME:/path", "./dir:/path" or "/host/dir:/path", each with an optional ":ro".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// Resource limits (cgroups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSection>,
    /// Mount the root filesystem read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Capabilities to add to docker's default set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<CapabilityName>,
    /// Capabilities to drop from docker's default set ("ALL" drops all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<CapabilityName>,
    /// Labels of your own (keys starting with "wharf." are reserved).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The network: "bridge" (the project's networks; the default unless the state root's
    /// config.toml says `[network] default = "none"`), "none" (loopback only) or "host".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// The project's networks to join (keys of `[networks]`, or "default"), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = { "$ref": "#/definitions/Name" }))]
    pub networks: Vec<String>,
    /// Published ports (compose's `ports`): "8080:80", "127.0.0.1:5353:53/udp".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// Whether the container should be running (default) or stopped.
    #[serde(default)]
    pub state: DesiredState,
    /// A health check run inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthCheck>,
    /// Security options: the seccomp profile and no_new_privileges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecuritySection>,
    /// tmpfs mounts (compose's `tmpfs`): "/run", "/cache:size=64m,mode=1777".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<TmpfsSpec>,
    /// The size of /dev/shm (default "64MiB").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<ByteSize>,
    /// Resource limits of the container's processes (compose's `ulimits`), never above
    /// wharf's own hard limits: `nofile = 1024` or `nofile = { soft = 1024, hard = 2048 }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ulimits: Option<UlimitsSection>,
    /// The signal that stops the container (default: the image's StopSignal, else SIGTERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<SignalName>,
    /// How long a stop waits after the stop signal before SIGKILL (default "10s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<HumanDuration>,
    /// Run a reaper as PID 1 that forwards signals and reaps zombies (docker's --init).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// Host devices given to the container: "/dev/fuse", "/dev/sdb:/dev/xvdb:r".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceSpec>,
}

/// One ulimit: a number for both limits, or the soft and the hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum UlimitValue {
    /// The soft and the hard limit.
    Both(#[schemars(range(min = 0))] u64),
    /// The soft limit and the hard limit apart.
    Pair(UlimitPair),
}

/// A soft and a hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UlimitPair {
    /// The limit the processes start with (at most `hard`).
    #[schemars(range(min = 0))]
    pub soft: u64,
    /// The most a process may raise its soft limit to.
    #[schemars(range(min = 0))]
    pub hard: u64,
}

impl UlimitValue {
    pub fn soft_hard(self) -> (u64, u64) {
        match self {
            UlimitValue::Both(n) => (n, n),
            UlimitValue::Pair(p) => (p.soft, p.hard),
        }
    }
}

/// docker's ulimit names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UlimitsSection {
    /// Core file size (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<UlimitValue>,
    /// CPU time (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<UlimitValue>,
    /// Data segment size (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<UlimitValue>,
    /// File size (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsize: Option<UlimitValue>,
    /// File locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locks: Option<UlimitValue>,
    /// Locked memory (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memlock: Option<UlimitValue>,
    /// POSIX message queue bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgqueue: Option<UlimitValue>,
    /// Nice priority ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<UlimitValue>,
    /// Open files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<UlimitValue>,
    /// Processes of the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nproc: Option<UlimitValue>,
    /// Resident set size (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss: Option<UlimitValue>,
    /// Real-time priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtprio: Option<UlimitValue>,
    /// Real-time CPU time (microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rttime: Option<UlimitValue>,
    /// Pending signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigpending: Option<UlimitValue>,
    /// Stack size (bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<UlimitValue>,
}

impl UlimitsSection {
    /// (name, soft, hard) of each one set, by name.
    pub fn entries(&self) -> Vec<(String, u64, u64)> {
        let all = [
            ("core", self.core),
            ("cpu", self.cpu),
            ("data", self.data),
            ("fsize", self.fsize),
            ("locks", self.locks),
            ("memlock", self.memlock),
            ("msgqueue", self.msgqueue),
            ("nice", self.nice),
            ("nofile", self.nofile),
            ("nproc", self.nproc),
            ("rss", self.rss),
            ("rtprio", self.rtprio),
            ("rttime", self.rttime),
            ("sigpending", self.sigpending),
            ("stack", self.stack),
        ];
        all.into_iter()
            .filter_map(|(n, v)| v.map(|v| (n.to_string(), v.soft_hard().0, v.soft_hard().1)))
            .collect()
    }
}

/// Security options of a container (docker's `--security-opt`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecuritySection {
    /// The seccomp profile: "default" (docker's, the default), "unconfined" (no filter), or
    /// a profile file in docker's JSON format, relative to this manifest file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub seccomp: Option<String>,
    /// Set no_new_privs for every process of the container (wharf sets it anyway unless the
    /// container is privileged).
    #[serde(default)]
    pub no_new_privileges: bool,
}

/// Resource limits, enforced with cgroups.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Memory limit, e.g. "256MiB".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Memory plus swap, e.g. "512MiB", or "unlimited".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<SwapLimit>,
    /// CPUs as a fraction: 0.5 is half of one CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001, max = 1024.0))]
    pub cpus: Option<f64>,
    /// Relative CPU weight, 2 to 262144 (docker's default is 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 262144))]
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pids: Option<i64>,
    /// CPUs the container may run on, e.g. "0-1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<CpuSet>,
}

/// A health check: a command run inside the container at an interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The command; exit status 0 means healthy.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Time between checks (default "30s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    /// How long one check may take before it counts as failed (default "30s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Consecutive failures before the container is unhealthy (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub retries: Option<u32>,
    /// Failures during this time after start do not count (default "0s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<HumanDuration>,
}

/// A named volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSection {
    /// Labels of your own on the volume.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Retention policies, evaluated after each converge and by `wharf system prune --policy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Which images to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<ImageRetention>,
    /// Which exited containers to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<ContainerRetention>,
    /// How much apply and run history to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalRetention>,
    /// Log rotation per container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogRetention>,
}

/// Image retention.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRetention {
    /// Keep the newest N images per repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<u32>,
    /// Remove images no container has used for this long, e.g. "7d".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_for: Option<HumanDuration>,
}

/// Container retention.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerRetention {
    /// Keep the last N exited generations per declared container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_exited: Option<u32>,
    /// Remove exited containers older than this, e.g. "30d".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<HumanDuration>,
}

/// Journal retention.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JournalRetention {
    /// Remove entries older than this, e.g. "90d".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<HumanDuration>,
    /// Keep at most this many entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<u64>,
}

/// Log rotation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogRetention {
    /// Rotate a container's log when it reaches this size, e.g. "10MiB".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteSize>,
    /// Keep at most this many log files per container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_files: Option<u32>,
}

/// The Name definition used for `propertyNames` of images (and the project's pattern).
pub(crate) fn name_schema() -> serde_json::Value {
    serde_json::json!({
        "description": "A name: a letter or digit, then at least one letter, digit, '_', '.' or '-'.",
        "type": "string",
        "pattern": "^[a-zA-Z0-9][a-zA-Z0-9_.-]+$"
    })
}

/// A container's or a volume's name: [`name_schema`] with the length limit of
/// [`crate::names::check`].
pub(crate) fn object_name_schema(kind: crate::names::NameKind) -> serde_json::Value {
    let what = match kind {
        crate::names::NameKind::Container => "A container name",
        crate::names::NameKind::Volume => "A volume name",
        crate::names::NameKind::Network => "A network name",
    };
    serde_json::json!({
        "description": format!("{what}: a letter or digit, then at least one letter, digit, '_', '.' or '-'; at most {} characters.", kind.max_len()),
        "type": "string",
        "pattern": "^[a-zA-Z0-9][a-zA-Z0-9_.-]+$",
        "maxLength": kind.max_len()
    })
}
