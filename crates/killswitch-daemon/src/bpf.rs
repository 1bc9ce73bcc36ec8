//! The bypass cgroup's BPF program: every socket created in the cgroup gets the bypass fwmark.
//!
//! Why a cgroup BPF program: the routing decision for a connected socket is made at `connect()`
//! (and for each datagram of an unconnected one) from the socket's mark. A mark given later by the
//! firewall (`meta mark set` in an output chain) forces a second route lookup after the source
//! address was chosen, which then needs masquerading; a mark on the socket from its creation makes
//! the first lookup the right one. `BPF_PROG_TYPE_CGROUP_SOCK` at `BPF_CGROUP_INET_SOCK_CREATE`
//! runs for every `AF_INET`/`AF_INET6` socket created by a process of the cgroup (or of a cgroup
//! below it), children included, and may write `struct bpf_sock`'s `mark`.
//!
//! The program is four instructions (`r2 = MARK; *(u32 *)(r1 + 16) = r2; r0 = 1; exit`: offset
//! 16 is `bpf_sock.mark`, and 1 lets the socket be created), loaded with `bpf(BPF_PROG_LOAD)` and
//! attached with `bpf(BPF_PROG_ATTACH)` to the cgroup's directory without flags: a cgroup then
//! holds at most one program of that attach type, and attaching again replaces it, so attaching is
//! idempotent (a restarted daemon attaches again and changes nothing). The attachment keeps the
//! program alive after the daemon closes its descriptor, and goes with the cgroup when the cgroup
//! is removed. Only ever attached to the daemon's own bypass cgroup.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `enum bpf_cmd` (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_QUERY: libc::c_long = 16;
/// `BPF_PROG_TYPE_CGROUP_SOCK`.
const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;
/// `BPF_CGROUP_INET_SOCK_CREATE`.
const BPF_CGROUP_INET_SOCK_CREATE: u32 = 2;
/// `offsetof(struct bpf_sock, mark)`.
const BPF_SOCK_MARK_OFFSET: i16 = 16;

/// One eBPF instruction (`struct bpf_insn`): opcode, destination and source registers (4 bits
/// each), offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Instruction {
    code: u8,
    registers: u8,
    offset: i16,
    immediate: i32,
}

impl Instruction {
    /// `dst = imm` (64-bit move of an immediate: BPF_ALU64 | BPF_MOV | BPF_K).
    fn mov64_imm(dst: u8, immediate: i32) -> Self {
        Instruction {
            code: 0xb7,
            registers: dst & 0x0f,
            offset: 0,
            immediate,
        }
    }

    /// `*(u32 *)(dst + offset) = src` (BPF_STX | BPF_MEM | BPF_W).
    fn store_word(dst: u8, offset: i16, src: u8) -> Self {
        Instruction {
            code: 0x63,
            registers: (dst & 0x0f) | ((src & 0x0f) << 4),
            offset,
            immediate: 0,
        }
    }

    /// `exit` (BPF_JMP | BPF_EXIT).
    fn exit() -> Self {
        Instruction {
            code: 0x95,
            registers: 0,
            offset: 0,
            immediate: 0,
        }
    }
}

/// The program: mark the socket with `mark`, and let it be created.
fn mark_program(mark: u32) -> [Instruction; 4] {
    [
        // The immediate is the mark's 32 bits; a 64-bit move sign-extends them, and the store
        // below writes only the low 32 bits, which are the mark whatever its top bit.
        Instruction::mov64_imm(2, mark as i32),
        Instruction::store_word(1, BPF_SOCK_MARK_OFFSET, 2),
        Instruction::mov64_imm(0, 1),
        Instruction::exit(),
    ]
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type` (the kernel takes a
/// shorter attribute and treats the rest as zero).
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

/// `union bpf_attr` for `BPF_PROG_ATTACH`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `union bpf_attr` for `BPF_PROG_QUERY`.
#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, properly laid out `union bpf_attr` prefix of the size passed; the
    // kernel reads it (and for a query writes into it) within that size, and into the buffers it
    // points to, which the callers keep alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            (attr as *mut T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Why the bypass program could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The kernel refused to load the program.
    #[error(
        "the kernel refused the bypass cgroup's BPF program ({source}); bypass needs a kernel \
         with cgroup BPF (CONFIG_CGROUP_BPF) and CAP_BPF or CAP_SYS_ADMIN for the daemon"
    )]
    Load {
        /// The error.
        source: io::Error,
    },
    /// The cgroup could not be opened or the program not attached to it.
    #[error("attaching the bypass BPF program to {path}: {source}")]
    Attach {
        /// The cgroup's directory.
        path: String,
        /// The error.
        source: io::Error,
    },
}

/// Loads the program that gives every new socket `mark`.
fn load(mark: u32) -> Result<OwnedFd, BpfError> {
    let program = mark_program(mark);
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"killswitch_bp");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SOCK,
        insn_cnt: program.len() as u32,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_INET_SOCK_CREATE,
        ..ProgLoadAttr::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr).map_err(|source| BpfError::Load { source })?;
    // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn open_dir(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

/// Attaches the marking program to the cgroup at `cgroup` (its directory), replacing any
/// program of ours already there: after this, every socket created in it gets `mark`.
pub fn attach_mark(cgroup: &Path, mark: u32) -> Result<(), BpfError> {
    let attach_error = |source| BpfError::Attach {
        path: cgroup.display().to_string(),
        source,
    };
    let program = load(mark)?;
    let dir = open_dir(cgroup).map_err(attach_error)?;
    let mut attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: program.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_INET_SOCK_CREATE,
        ..ProgAttachAttr::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(attach_error)?;
    Ok(())
}

/// How many socket-creation programs are attached directly to the cgroup at `cgroup` (for
/// status and tests: "nothing of a bypass remains").
pub fn attached_programs(cgroup: &Path) -> io::Result<u32> {
    let dir = open_dir(cgroup)?;
    let mut attr = ProgQueryAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_INET_SOCK_CREATE,
        ..ProgQueryAttr::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    Ok(attr.prog_cnt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_the_four_documented_instructions() {
        let program = mark_program(0x6b62_7970);
        // As the kernel reads them: mov64 r2, 0x6b627970; stxw [r1+16], r2; mov64 r0, 1; exit.
        let bytes: Vec<u8> = program
            .iter()
            .flat_map(|i| {
                let mut b = vec![i.code, i.registers];
                b.extend_from_slice(&i.offset.to_ne_bytes());
                b.extend_from_slice(&i.immediate.to_ne_bytes());
                b
            })
            .collect();
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[0..2], &[0xb7, 0x02]);
        assert_eq!(&bytes[4..8], &0x6b62_7970i32.to_ne_bytes());
        assert_eq!(&bytes[8..10], &[0x63, 0x21]);
        assert_eq!(&bytes[10..12], &16i16.to_ne_bytes());
        assert_eq!(&bytes[16..18], &[0xb7, 0x00]);
        assert_eq!(&bytes[20..24], &1i32.to_ne_bytes());
        assert_eq!(bytes[24], 0x95);
        assert_eq!(std::mem::size_of::<Instruction>(), 8);
        // A mark with the top bit set is still its own 32 bits in the store.
        assert_eq!(mark_program(0xffff_0001)[0].immediate as u32, 0xffff_0001);
    }
}
