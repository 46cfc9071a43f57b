//! cgroup v2 device rules: v2 has no devices controller; a `BPF_PROG_TYPE_CGROUP_DEVICE`
//! program attached to the cgroup decides instead, as runc and crun do. The program is built
//! here from [`super::DEFAULT_DEVICES`], a few instructions per rule, default deny.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};

type Rule<'a> = (char, Option<u32>, Option<u32>, &'a str);

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// struct bpf_cgroup_dev_ctx values.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// One `struct bpf_insn`, already packed: code, dst|src<<4, off (le), imm (le).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |acc, c| {
        acc | match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => 0,
        }
    })
}

/// The filter: R2 = type, R3 = access, R4 = major, R5 = minor; each rule that matches
/// returns 1 (allow); when none does, 0 (deny).
pub(crate) fn program(rules: &[Rule<'_>]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0), // R2 = ctx->access_type
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0), // R3 = ctx->access_type >> 16
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0), // R4 = ctx->major
        insn(LDX_MEM_W, 5, 1, 8, 0), // R5 = ctx->minor
    ];
    for &(kind, major, minor, access) in rules {
        // Checks that jump to the end of this rule's block when they fail; the offset is
        // patched once the block's length is known.
        let mut block: Vec<Insn> = Vec::new();
        let kind = match kind {
            'b' => Some(DEV_BLOCK),
            'c' => Some(DEV_CHAR),
            _ => None, // 'a': any type
        };
        if let Some(k) = kind {
            block.push(insn(JNE_K, 2, 0, 0, k));
        }
        let bits = access_bits(access);
        if bits != ACC_MKNOD | ACC_READ | ACC_WRITE {
            // Allow only when every requested bit is in the rule: (R3 & bits) == R3.
            block.push(insn(MOV64_X, 1, 3, 0, 0));
            block.push(insn(ALU32_AND_K, 1, 0, 0, bits));
            block.push(insn(JNE_X, 1, 3, 0, 0));
        }
        if let Some(m) = major {
            block.push(insn(JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = minor {
            block.push(insn(JNE_K, 5, 0, 0, m as i32));
        }
        block.push(insn(MOV64_K, 0, 0, 0, 1));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K || ins.code == JNE_X {
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH / DETACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: bpf(2) reads (and for some commands writes) `size_of::<T>()` bytes at `attr`,
    // a live, exclusively borrowed #[repr(C)] value laid out as the kernel's `union
    // bpf_attr` prefix for `cmd`; the kernel zero-extends a shorter attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"wharf_device");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..ProgLoadAttr::default()
    };
    let fd = match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => fd,
        Err(e) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            return Err(e).with_context(|| {
                format!(
                    "cannot load the device filter (BPF_PROG_LOAD): {}",
                    String::from_utf8_lossy(&log[..end]).trim()
                )
            });
        }
    };
    // SAFETY: a successful BPF_PROG_LOAD returns a new file descriptor (O_CLOEXEC) that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches the default device filter to the cgroup `dir`; returns the program's fd, which
/// [`detach`] needs. Other programs (of a parent) still apply: BPF_F_ALLOW_MULTI.
/// `extra` rules (`--device`) are allowed besides the defaults.
pub(crate) fn attach_with(dir: &Path, extra: &[Rule<'_>]) -> Result<OwnedFd> {
    let rules: Vec<Rule<'_>> = super::DEFAULT_DEVICES
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect();
    let prog = load(&program(&rules))?;
    attach_cmd(BPF_PROG_ATTACH, dir, &prog, BPF_F_ALLOW_MULTI).with_context(|| {
        format!(
            "cannot attach the device filter to {} (BPF_PROG_ATTACH)",
            dir.display()
        )
    })?;
    Ok(prog)
}

/// Detaches the program `prog` from the cgroup `dir`.
pub(crate) fn detach(dir: &Path, prog: &OwnedFd) -> Result<()> {
    attach_cmd(BPF_PROG_DETACH, dir, prog, 0)
        .with_context(|| format!("cannot detach the device filter from {}", dir.display()))
}

/// BPF_PROG_ATTACH or BPF_PROG_DETACH of a device program on the cgroup `dir`.
fn attach_cmd(cmd: libc::c_long, dir: &Path, prog: &OwnedFd, flags: u32) -> Result<()> {
    let cg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .with_context(|| format!("cannot open cgroup {}", dir.display()))?;
    let mut attr = AttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: flags,
        ..AttachAttr::default()
    };
    bpf(cmd, &mut attr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on a device access, as the kernel would: a tiny interpreter for
    /// the instructions `program` emits.
    fn run(p: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access << 16) | kind) as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = ctx[(i.off / 4) as usize] as u64,
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = (r[dst] as u32 >> i.imm) as u64,
                MOV64_X => r[dst] = r[src],
                MOV64_K => r[dst] = i.imm as u64,
                JNE_K if r[dst] != i.imm as u32 as u64 => pc += i.off as usize,
                JNE_X if r[dst] != r[src] => pc += i.off as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0],
                c => panic!("unknown opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn default_rules_allow_and_deny() {
        let p = program(crate::runtime::cgroup::DEFAULT_DEVICES);
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(run(&p, DEV_CHAR, rw, 1, 3), 1, "open /dev/null");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 136, 7), 1, "open /dev/pts/7");
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 1, 1), 1, "mknod /dev/mem");
        assert_eq!(run(&p, DEV_BLOCK, ACC_MKNOD, 8, 0), 1, "mknod /dev/sda");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 1), 0, "open /dev/mem");
        assert_eq!(run(&p, DEV_BLOCK, rw, 8, 0), 0, "open /dev/sda");
        assert_eq!(run(&p, DEV_CHAR, rw, 1, 11), 0, "open /dev/kmsg");
        assert_eq!(run(&p, DEV_BLOCK, rw, 1, 3), 0, "block 1:3 is not null");
    }
}
