//! The Linux sandbox, applied once the model is loaded:
//! - landlock (before any serving thread starts, so every thread inherits it; all threads where the kernel
//!   can): the filesystem becomes read-only access to the export folder (no write anywhere, no execute, no
//!   other file), no TCP bind or connect, no signals or abstract sockets outside the process;
//! - resource limits: address space (what is mapped now plus a headroom), open files, no core dumps;
//! - seccomp (on all threads): an allow-list of what serving needs. No exec, no fork (clone only with
//!   CLONE_THREAD; clone3 answers ENOSYS so thread creation falls back to clone, whose flags a filter can
//!   read), no socket(), connect(), bind() or listen(): accept on the listening socket still works.
//!
//! Everything goes through safe wrappers (landlock, seccompiler, rlimit): no unsafe code here.

use std::collections::BTreeMap;
use std::path::Path;

use landlock::{path_beneath_rules, Access, AccessFs, AccessNet, RestrictSelfAttr, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI};
use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};
use serde_json::{json, Value};

use crate::error::ServeError;

/// Restrict the filesystem (and TCP, signals) of this thread and every thread it starts afterwards.
/// Returns what the kernel enforces: "fully-enforced", "partially-enforced" or "not-enforced" (a kernel
/// without landlock; the server then says so in its log and /healthz), and whether it covered every
/// thread at once.
pub fn restrict_filesystem(dir: &Path) -> Result<(&'static str, bool), ServeError> {
    let err = |e: landlock::RulesetError| ServeError::Sandbox(format!("landlock: {e}"));
    let abi = ABI::V6;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
        .map_err(err)?
        .scope(Scope::from_all(abi))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules([dir], AccessFs::ReadFile | AccessFs::ReadDir))
        .map_err(err)?
        // Every thread, on kernels with landlock ABI 8; older ones drop the flag (best effort), which is why
        // this runs before any serving thread starts.
        .all_threads(true)
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    let state = match status.ruleset {
        RulesetStatus::FullyEnforced => "fully-enforced",
        RulesetStatus::PartiallyEnforced => "partially-enforced",
        RulesetStatus::NotEnforced => "not-enforced",
    };
    Ok((state, status.all_threads))
}

/// Headroom of address space above what is mapped when the limit is set.
const ADDRESS_SPACE_HEADROOM: u64 = 2 << 30;

/// Resource limits, then the seccomp filters on every thread. `mapped_bytes` is the process's address
/// space now (VmSize).
pub fn lock_down(mapped_bytes: Option<u64>, max_open_files: u64) -> Result<Value, ServeError> {
    let rl = |what: &str, e: std::io::Error| ServeError::Sandbox(format!("setrlimit {what}: {e}"));
    let address_space = mapped_bytes.map(|b| b + ADDRESS_SPACE_HEADROOM);
    if let Some(limit) = address_space {
        rlimit::setrlimit(rlimit::Resource::AS, limit, limit).map_err(|e| rl("AS", e))?;
    }
    rlimit::setrlimit(rlimit::Resource::NOFILE, max_open_files, max_open_files).map_err(|e| rl("NOFILE", e))?;
    rlimit::setrlimit(rlimit::Resource::CORE, 0, 0).map_err(|e| rl("CORE", e))?;
    for prog in filters()? {
        seccompiler::apply_filter_all_threads(&prog).map_err(|e| ServeError::Sandbox(format!("seccomp: {e}")))?;
    }
    Ok(json!({ "seccomp": "allow-list", "rlimit_as_bytes": address_space, "rlimit_nofile": max_open_files }))
}

/// System calls a serving process makes once loaded: memory, threads (futex, clone with CLONE_THREAD),
/// time, epoll, accepting and talking on sockets it already has, signals, reading files (landlock says which).
const ALLOWED: &[i64] = &[
    libc::SYS_read, libc::SYS_write, libc::SYS_readv, libc::SYS_writev, libc::SYS_pread64, libc::SYS_close,
    libc::SYS_fstat, libc::SYS_newfstatat, libc::SYS_statx, libc::SYS_lseek, libc::SYS_openat, libc::SYS_getdents64,
    libc::SYS_mmap, libc::SYS_munmap, libc::SYS_mremap, libc::SYS_mprotect, libc::SYS_madvise, libc::SYS_brk,
    libc::SYS_futex, libc::SYS_sched_yield, libc::SYS_sched_getaffinity, libc::SYS_getrandom, libc::SYS_membarrier,
    libc::SYS_clock_gettime, libc::SYS_clock_getres, libc::SYS_clock_nanosleep, libc::SYS_nanosleep, libc::SYS_gettimeofday,
    libc::SYS_epoll_pwait, libc::SYS_epoll_pwait2, libc::SYS_epoll_ctl, libc::SYS_epoll_create1, libc::SYS_eventfd2, libc::SYS_ppoll,
    libc::SYS_accept4, libc::SYS_recvfrom, libc::SYS_sendto, libc::SYS_recvmsg, libc::SYS_sendmsg, libc::SYS_shutdown,
    libc::SYS_getsockname, libc::SYS_getpeername, libc::SYS_setsockopt, libc::SYS_getsockopt, libc::SYS_fcntl, libc::SYS_ioctl,
    libc::SYS_pipe2, libc::SYS_rt_sigaction, libc::SYS_rt_sigprocmask, libc::SYS_rt_sigreturn, libc::SYS_sigaltstack,
    libc::SYS_exit, libc::SYS_exit_group, libc::SYS_gettid, libc::SYS_getpid, libc::SYS_tgkill, libc::SYS_set_robust_list,
    libc::SYS_rseq, libc::SYS_prctl, libc::SYS_getcwd, libc::SYS_uname, libc::SYS_restart_syscall, libc::SYS_getrusage,
    libc::SYS_sched_getparam, libc::SYS_sched_getscheduler, libc::SYS_clone3, libc::SYS_mincore,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_accept,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_arch_prctl,
];

/// The two filters: clone3 → ENOSYS, and the allow-list (anything else → EPERM).
fn filters() -> Result<Vec<BpfProgram>, ServeError> {
    
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(seccomp_err)?;
    let clone3 = SeccompFilter::new(BTreeMap::from([(libc::SYS_clone3, vec![])]), SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), arch).map_err(seccomp_err)?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED.iter().map(|&n| (n, vec![])).collect();
    let thread_flag = libc::CLONE_THREAD as u64;
    let only_threads = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(thread_flag), thread_flag).map_err(seccomp_err)?;
    rules.insert(libc::SYS_clone, vec![SeccompRule::new(vec![only_threads]).map_err(seccomp_err)?]);
    let allow = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch).map_err(seccomp_err)?;
    let progs: Result<Vec<BpfProgram>, _> = [clone3, allow].into_iter().map(BpfProgram::try_from).collect();
    progs.map_err(seccomp_err)
}

fn seccomp_err(e: impl std::fmt::Display) -> ServeError {
    ServeError::Sandbox(format!("seccomp: {e}"))
}
