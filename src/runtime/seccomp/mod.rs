//! seccomp: docker's default profile (`default.json`, moby's, see `NOTICE`) or the user's,
//! resolved against a container's capabilities, architecture and kernel as moby's loader
//! does, compiled to BPF with libseccomp in the parent, cached under the state root, and
//! loaded by the forked child with one `seccomp(2)` call just before exec.
//!
//! - [`Security`] is what `--security-opt` and a manifest's `security` ask for; it is part
//!   of the container's recorded config (a profile file is read once, at create).
//! - [`filter_for`] gives the BPF program of a container or exec (`None`: unconfined), from
//!   `<root>/seccomp/<key>.bpf` when an earlier start compiled it; the key is the sha256 of
//!   the profile, the capabilities, the architecture, the kernel and the libseccomp version.
//! - [`load`] runs in the forked child: no allocation, no panic, one syscall (two with
//!   `no_new_privs`, which the kernel requires without CAP_SYS_ADMIN).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::Deserialize;

use crate::model::{Seccomp, Security};
use sha2::{Digest, Sha256};

use crate::error::user;

/// docker's default profile, as moby ships it.
pub const DEFAULT_PROFILE: &str = include_str!("default.json");

/// Changes when the cache's format or the compiler's rules change.
const CACHE_VERSION: &str = "wharf-seccomp-1";

fn bad(msg: String, hint: &str) -> anyhow::Error {
    user(msg)
        .hint(hint)
        .code(crate::error::exit::RUNTIME)
        .into()
}

impl Security {
    /// Applies `--security-opt` values (docker's forms: `seccomp=unconfined`,
    /// `seccomp=PROFILE.json`, `seccomp:…`, `no-new-privileges`, `no-new-privileges=true`).
    /// A profile file is read and checked here.
    pub fn from_opts(opts: &[String]) -> Result<Security> {
        let mut s = Security::default();
        for o in opts {
            let (key, value) = match o.split_once(['=', ':']) {
                Some((k, v)) => (k, Some(v)),
                None => (o.as_str(), None),
            };
            match (key, value) {
                ("seccomp", Some("unconfined")) => s.seccomp = Seccomp::Unconfined,
                ("seccomp", Some("default" | "builtin")) => s.seccomp = Seccomp::Default,
                ("seccomp", Some(path)) if !path.is_empty() => {
                    s.seccomp = read_profile(Path::new(path))?;
                }
                ("no-new-privileges", None | Some("true")) => s.no_new_privileges = true,
                ("no-new-privileges", Some("false")) => s.no_new_privileges = false,
                _ => {
                    return Err(bad(
                        format!("unsupported --security-opt {o:?}"),
                        "use seccomp=unconfined, seccomp=PROFILE.json or no-new-privileges \
                         (apparmor and SELinux labels are not supported)",
                    ));
                }
            }
        }
        Ok(s)
    }
}

/// Reads and checks the profile at `path` (it must parse and compile).
pub fn read_profile(path: &Path) -> Result<Seccomp> {
    let json = std::fs::read_to_string(path).map_err(|e| {
        bad(
            format!("cannot read the seccomp profile {}: {e}", path.display()),
            "give the path of a JSON seccomp profile (docker's format)",
        )
    })?;
    check_profile(&json).map_err(|e| {
        bad(
            format!("the seccomp profile {} is invalid: {e:#}", path.display()),
            "fix it (docker's profile format: defaultAction, architectures or archMap, syscalls)",
        )
    })?;
    let source = std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned();
    Ok(Seccomp::Profile { source, json })
}

/// Checks that `json` is a profile wharf can compile (with docker's default capabilities).
pub fn check_profile(json: &str) -> Result<()> {
    let p: Profile = serde_json::from_str(json).context("not a seccomp profile")?;
    let caps = default_caps();
    compile(&resolve(&p, &caps, native_arch(), kernel_version())?)?;
    Ok(())
}

fn default_caps() -> BTreeSet<String> {
    super::spec::DEFAULT_CAPS
        .iter()
        .map(|c| c.to_string())
        .collect()
}

// ---- the profile, in docker's JSON format ----

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(default)]
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    name: String,
    #[serde(default)]
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    includes: Option<Cond>,
    #[serde(default)]
    excludes: Option<Cond>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cond {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// A profile resolved for one container: the rules that apply, and the architectures.
#[derive(Debug, Clone)]
struct Resolved {
    default_action: String,
    default_errno: Option<u32>,
    arches: Vec<String>,
    rules: Vec<Rule>,
}

/// moby's name of the architecture wharf was built for (the `arches` of includes/excludes).
fn native_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The libseccomp name of moby's architecture name.
fn seccomp_arch(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "amd64" => "SCMP_ARCH_X86_64",
        "x86" => "SCMP_ARCH_X86",
        "arm64" => "SCMP_ARCH_AARCH64",
        "arm" => "SCMP_ARCH_ARM",
        "ppc64le" => "SCMP_ARCH_PPC64LE",
        "ppc64" => "SCMP_ARCH_PPC64",
        "s390x" => "SCMP_ARCH_S390X",
        "riscv64" => "SCMP_ARCH_RISCV64",
        "loong64" => "SCMP_ARCH_LOONGARCH64",
        _ => return None,
    })
}

/// The running kernel's (major, minor).
fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_kernel(&release).unwrap_or((0, 0))
}

fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// moby's `setupSeccomp`: the architectures of `arch` (from archMap, or the profile's list),
/// and the rules whose includes hold and excludes do not for these bounding capabilities,
/// this architecture and this kernel.
fn resolve(
    p: &Profile,
    caps: &BTreeSet<String>,
    arch: &str,
    kernel: (u32, u32),
) -> Result<Resolved> {
    if !p.architectures.is_empty() && !p.arch_map.is_empty() {
        anyhow::bail!("both 'architectures' and 'archMap' are given: use one");
    }
    let mut arches = p.architectures.clone();
    if let Some(native) = seccomp_arch(arch)
        && let Some(m) = p.arch_map.iter().find(|m| m.architecture == native)
    {
        arches.push(m.architecture.clone());
        arches.extend(m.sub_architectures.clone().unwrap_or_default());
    }
    let at_least = |v: &str| -> Result<bool> {
        let want = parse_kernel(v).with_context(|| format!("bad minKernel {v:?}"))?;
        Ok(kernel >= want)
    };
    let mut rules = Vec::new();
    'rules: for r in &p.syscalls {
        let mut r = r.clone();
        if !r.name.is_empty() {
            if !r.names.is_empty() {
                anyhow::bail!("a rule gives both 'name' and 'names': use one");
            }
            r.names = vec![r.name.clone()];
        }
        if let Some(x) = &r.excludes
            && (x.arches.iter().any(|a| a == arch)
                || x.caps.iter().any(|c| caps.contains(c))
                || x.min_kernel.as_deref().map(at_least).transpose()? == Some(true))
        {
            continue 'rules;
        }
        if let Some(i) = &r.includes
            && ((!i.arches.is_empty() && !i.arches.iter().any(|a| a == arch))
                || !i.caps.iter().all(|c| caps.contains(c))
                || i.min_kernel.as_deref().map(at_least).transpose()? == Some(false))
        {
            continue 'rules;
        }
        rules.push(r);
    }
    Ok(Resolved {
        default_action: p.default_action.clone(),
        default_errno: p.default_errno_ret,
        arches,
        rules,
    })
}

/// An action of the profile; an errno action without `errnoRet` returns EPERM, as in runc
/// (`defaultErrnoRet` is the default action's only).
fn action(name: &str, errno: Option<u32>) -> Result<ScmpAction> {
    let ret = errno.unwrap_or(libc::EPERM as u32) as i32;
    Ok(match name {
        "SCMP_ACT_ERRNO" => ScmpAction::Errno(ret),
        "SCMP_ACT_TRACE" => ScmpAction::Trace(u16::try_from(ret).context("bad trace value")?),
        "SCMP_ACT_NOTIFY" => anyhow::bail!("SCMP_ACT_NOTIFY is not supported"),
        other => ScmpAction::from_str(other, None)
            .with_context(|| format!("unknown action {other:?}"))?,
    })
}

fn compare(a: &Arg) -> Result<ScmpArgCompare> {
    let op = match a.op.as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        // docker's format: `value` is the mask, `valueTwo` the value compared.
        "SCMP_CMP_MASKED_EQ" => {
            return Ok(ScmpArgCompare::new(
                a.index,
                ScmpCompareOp::MaskedEqual(a.value),
                a.value_two,
            ));
        }
        other => anyhow::bail!("unknown comparison {other:?}"),
    };
    if a.index > 5 {
        anyhow::bail!("argument index {} is not 0 to 5", a.index);
    }
    Ok(ScmpArgCompare::new(a.index, op, a.value))
}

/// Compiles a resolved profile to a BPF program (an array of `struct sock_filter`).
fn compile(r: &Resolved) -> Result<Vec<u8>> {
    let default = action(&r.default_action, r.default_errno).context("bad defaultAction")?;
    let mut ctx = ScmpFilterContext::new(default).context("libseccomp: new filter")?;
    // The child sets no_new_privs itself when the kernel needs it (see `load`).
    ctx.set_ctl_nnp(false).context("libseccomp: nnp")?;
    for a in &r.arches {
        let arch: ScmpArch = a
            .parse()
            .with_context(|| format!("unknown architecture {a:?}"))?;
        ctx.add_arch(arch)
            .with_context(|| format!("libseccomp: add architecture {a}"))?;
    }
    for rule in &r.rules {
        let act = action(&rule.action, rule.errno_ret)?;
        if act == default {
            continue; // libseccomp refuses a rule that does what the default does
        }
        let conds = rule.args.iter().map(compare).collect::<Result<Vec<_>>>()?;
        let distinct: BTreeSet<u32> = rule.args.iter().map(|a| a.index).collect();
        for name in &rule.names {
            // A name this libseccomp does not know for any architecture: skipped, as runc does.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let added = if conds.is_empty() {
                ctx.add_rule(act, sc)
            } else if distinct.len() == conds.len() {
                ctx.add_rule_conditional(act, sc, &conds)
            } else {
                // Conditions on the same argument: each is a rule of its own (an OR), as runc.
                conds
                    .iter()
                    .try_for_each(|c| ctx.add_rule_conditional(act, sc, &[*c]).map(drop))
                    .map(|()| &mut ctx)
            };
            added.with_context(|| format!("libseccomp: rule for {name}"))?;
        }
    }
    // Debian 12's libseccomp (2.5) exports to a descriptor only: a memfd, read back.
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"wharf-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: a new descriptor owned by nothing else.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    ctx.export_bpf(&file)
        .context("libseccomp: export the BPF program")?;
    let mut bpf = Vec::new();
    std::io::Seek::rewind(&mut file).context("memfd")?;
    std::io::Read::read_to_end(&mut file, &mut bpf).context("memfd")?;
    Ok(bpf)
}

/// The capability names of a bounding set (bit i = capability i).
fn cap_names(caps: u64) -> BTreeSet<String> {
    caps::all()
        .into_iter()
        .filter(|c| caps & c.bitmask() != 0)
        .map(|c| c.to_string())
        .collect()
}

/// The BPF program for a container (or an exec into it) with these options and bounding
/// capabilities; `None` when it runs unconfined (`seccomp=unconfined`, or `--privileged`
/// as in docker). Compiled once per (profile, capabilities, architecture, kernel,
/// libseccomp) and kept in `<root>/seccomp/`.
pub fn filter_for(
    root: &Path,
    sec: &Security,
    caps: u64,
    privileged: bool,
) -> Result<Option<Vec<u8>>> {
    let json = match &sec.seccomp {
        _ if privileged => return Ok(None),
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Default => DEFAULT_PROFILE,
        Seccomp::Profile { json, .. } => json.as_str(),
    };
    let arch = native_arch();
    let kernel = kernel_version();
    let lib = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let mut h = Sha256::new();
    for part in [
        CACHE_VERSION,
        json,
        &format!("{caps:016x}"),
        arch,
        &format!("{}.{}", kernel.0, kernel.1),
        &lib,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let path = root
        .join("seccomp")
        .join(format!("{}.bpf", hex::encode(h.finalize())));
    if let Ok(bpf) = std::fs::read(&path)
        && !bpf.is_empty()
        && bpf.len().is_multiple_of(8)
    {
        return Ok(Some(bpf));
    }
    let p: Profile = serde_json::from_str(json).context("the seccomp profile does not parse")?;
    let bpf = compile(&resolve(&p, &cap_names(caps), arch, kernel)?)
        .context("cannot compile the seccomp profile")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // A cache: a failed write only means the next start compiles again.
    if let Err(e) = crate::store::fsutil::write_atomic(&path, &bpf, 0o600) {
        tracing::debug!("cannot cache the seccomp filter: {e:#}");
    }
    Ok(Some(bpf))
}

/// Loads the BPF program `bpf` into this process (the forked child, last before exec).
/// Without CAP_SYS_ADMIN the kernel requires no_new_privs first: it is set then (EACCES).
pub fn load(bpf: &[u8]) -> std::io::Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const u8,
    }
    let len = libc::c_ushort::try_from(bpf.len() / 8)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::E2BIG))?;
    let prog = SockFprog {
        len,
        filter: bpf.as_ptr(),
    };
    const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
    let set = || {
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads `len` sock_filter entries (8 bytes
        // each) from `filter`, which points at `bpf`, alive for the call.
        unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                0 as libc::c_ulong,
                &prog as *const SockFprog,
            )
        }
    };
    if set() == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EACCES) {
        return Err(e);
    }
    // SAFETY: prctl with plain integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if set() == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_profile() -> Profile {
        serde_json::from_str(DEFAULT_PROFILE).expect("the shipped profile parses")
    }

    fn names(r: &Resolved, action: &str) -> BTreeSet<String> {
        r.rules
            .iter()
            .filter(|r| r.action == action && r.args.is_empty())
            .flat_map(|r| r.names.clone())
            .collect()
    }

    #[test]
    fn default_caps_leave_out_what_docker_leaves_out() {
        let r = resolve(&default_profile(), &default_caps(), "amd64", (6, 1)).unwrap();
        let allowed = names(&r, "SCMP_ACT_ALLOW");
        // ptrace and process_vm_* from Linux 4.8 on (their minKernel include).
        for n in [
            "read",
            "execve",
            "arch_prctl",
            "chown",
            "process_vm_readv",
            "ptrace",
        ] {
            assert!(allowed.contains(n), "{n} is allowed");
        }
        for n in [
            "unshare", "mount", "keyctl", "add_key", "kcmp", "bpf", "setns", "clone3",
        ] {
            assert!(
                !allowed.contains(n),
                "{n} is not allowed without its capability"
            );
        }
        // clone3 gets ENOSYS without CAP_SYS_ADMIN (so libc falls back to clone).
        assert!(r.rules.iter().any(|x| x.names == ["clone3"]
            && x.action == "SCMP_ACT_ERRNO"
            && x.errno_ret == Some(libc::ENOSYS as u32)));
        // Only amd64's architectures, and s390's rules are left out.
        assert_eq!(
            r.arches,
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        assert!(!allowed.contains("s390_runtime_instr"));
    }

    #[test]
    fn capabilities_bring_their_syscalls() {
        let mut caps = default_caps();
        caps.insert("CAP_SYS_ADMIN".into());
        caps.insert("CAP_SYS_PTRACE".into());
        let r = resolve(&default_profile(), &caps, "amd64", (6, 1)).unwrap();
        let allowed = names(&r, "SCMP_ACT_ALLOW");
        for n in ["unshare", "mount", "setns", "clone3", "ptrace", "kcmp"] {
            assert!(allowed.contains(n), "{n} with its capability");
        }
        assert!(
            !r.rules
                .iter()
                .any(|x| x.names == ["clone3"] && x.action == "SCMP_ACT_ERRNO")
        );
        // ptrace below 4.8 only with CAP_SYS_PTRACE.
        let r = resolve(&default_profile(), &default_caps(), "amd64", (4, 4)).unwrap();
        assert!(!names(&r, "SCMP_ACT_ALLOW").contains("ptrace"));
    }

    #[test]
    fn the_default_profile_compiles_and_a_bad_one_is_refused() {
        let r = resolve(
            &default_profile(),
            &default_caps(),
            native_arch(),
            kernel_version(),
        )
        .unwrap();
        let bpf = compile(&r).unwrap();
        assert!(!bpf.is_empty() && bpf.len().is_multiple_of(8));
        assert!(check_profile(r#"{"defaultAction": "SCMP_ACT_NOPE"}"#).is_err());
        assert!(
            check_profile(
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "args": [
              {"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#
            )
            .is_err()
        );
        assert!(check_profile("[").is_err());
        check_profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mount", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
        )
        .unwrap();
    }

    #[test]
    fn security_opts_parse_as_docker_writes_them() {
        let s = Security::from_opts(&["seccomp=unconfined".into(), "no-new-privileges".into()])
            .unwrap();
        assert_eq!(s.seccomp, Seccomp::Unconfined);
        assert!(s.no_new_privileges);
        let s = Security::from_opts(&["no-new-privileges:true".into()]).unwrap();
        assert!(s.no_new_privileges && s.seccomp == Seccomp::Default);
        for bad in ["apparmor=unconfined", "seccomp=", "no-new-privileges=maybe"] {
            assert!(Security::from_opts(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(Security::from_opts(&["seccomp=/nonexistent/profile.json".into()]).is_err());
    }
}
