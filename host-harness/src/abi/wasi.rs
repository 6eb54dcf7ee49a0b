//! The WASI preview1 functions that proxy-wasm modules import (both `wasi_snapshot_preview1` and
//! `wasi_unstable`): stdout/stderr go to the recorder as log lines, clocks read the host's clock, randomness
//! comes from the VM's random source (the OS CSPRNG unless a test asked for a seed), there is no file system.

use wasmtime::{Linker, Result};

use super::{read, write, write_u32, write_u64, Ctx};
use crate::host::HostState;
use crate::types::LogLevel;

const SUCCESS: i32 = 0;
const BADF: i32 = 8;
const INVAL: i32 = 28;
const IO: i32 = 29;
const NOSYS: i32 = 52;
const SPIPE: i32 = 70;
const NOTCAPABLE: i32 = 76;

fn flush_lines(state: &mut HostState, fd: i32) {
    let buf = if fd == 1 {
        &mut state.stdout
    } else {
        &mut state.stderr
    };
    let mut lines = Vec::new();
    while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=pos).collect();
        lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
    }
    let level = if fd == 1 {
        LogLevel::Info
    } else {
        LogLevel::Error
    };
    for line in lines {
        state.log(level, line);
    }
}

pub(super) fn add(linker: &mut Linker<HostState>, m: &str) -> Result<()> {
    linker.func_wrap(
        m,
        "fd_write",
        |mut caller: Ctx<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32| -> Result<i32> {
            const NAME: &str = "fd_write";
            let table = read(&caller, iovs, iovs_len.saturating_mul(8), NAME)?;
            let mut data = Vec::new();
            for iov in table.chunks_exact(8) {
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                data.extend(read(&caller, ptr, len, NAME)?);
            }
            if fd != 1 && fd != 2 {
                return Ok(BADF);
            }
            let n = data.len() as u32;
            {
                let state = caller.data_mut();
                if fd == 1 {
                    state.stdout.extend(data);
                } else {
                    state.stderr.extend(data);
                }
                flush_lines(state, fd);
            }
            write_u32(&mut caller, nwritten, n, NAME)?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "fd_read",
        |mut caller: Ctx<'_>, fd: i32, _iovs: i32, _len: i32, nread: i32| -> Result<i32> {
            if fd != 0 {
                return Ok(BADF);
            }
            write_u32(&mut caller, nread, 0, "fd_read")?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "fd_seek",
        |_c: Ctx<'_>, fd: i32, _off: i64, _whence: i32, _out: i32| -> Result<i32> {
            Ok(if (0..=2).contains(&fd) { SPIPE } else { BADF })
        },
    )?;
    linker.func_wrap(m, "fd_close", |_c: Ctx<'_>, _fd: i32| -> Result<i32> {
        Ok(SUCCESS)
    })?;
    linker.func_wrap(
        m,
        "fd_fdstat_get",
        |mut caller: Ctx<'_>, fd: i32, out: i32| -> Result<i32> {
            if !(0..=2).contains(&fd) {
                return Ok(BADF);
            }
            let mut stat = [0u8; 24];
            stat[0] = 2; // character device
            let rights: u64 = if fd == 0 { 1 << 1 } else { 1 << 6 }; // fd_read / fd_write
            stat[8..16].copy_from_slice(&rights.to_le_bytes());
            write(&mut caller, out, &stat, "fd_fdstat_get")?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "fd_prestat_get",
        |_c: Ctx<'_>, _fd: i32, _out: i32| -> Result<i32> { Ok(BADF) },
    )?;
    linker.func_wrap(
        m,
        "fd_prestat_dir_name",
        |_c: Ctx<'_>, _fd: i32, _p: i32, _l: i32| -> Result<i32> { Ok(BADF) },
    )?;
    linker.func_wrap(
        m,
        "path_open",
        |_c: Ctx<'_>,
         _fd: i32,
         _df: i32,
         _p: i32,
         _pl: i32,
         _of: i32,
         _rb: i64,
         _ri: i64,
         _ff: i32,
         _out: i32|
         -> Result<i32> { Ok(NOTCAPABLE) },
    )?;
    linker.func_wrap(
        m,
        "environ_sizes_get",
        |mut caller: Ctx<'_>, count: i32, size: i32| -> Result<i32> {
            let env = caller.data().env.clone();
            let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
            write_u32(&mut caller, count, env.len() as u32, "environ_sizes_get")?;
            write_u32(&mut caller, size, bytes as u32, "environ_sizes_get")?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "environ_get",
        |mut caller: Ctx<'_>, ptrs: i32, buf: i32| -> Result<i32> {
            let env = caller.data().env.clone();
            let mut offset = 0i32;
            for (i, (k, v)) in env.iter().enumerate() {
                let entry = format!("{k}={v}\0");
                write_u32(
                    &mut caller,
                    ptrs + 4 * i as i32,
                    (buf + offset) as u32,
                    "environ_get",
                )?;
                write(&mut caller, buf + offset, entry.as_bytes(), "environ_get")?;
                offset += entry.len() as i32;
            }
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "args_sizes_get",
        |mut caller: Ctx<'_>, count: i32, size: i32| -> Result<i32> {
            write_u32(&mut caller, count, 0, "args_sizes_get")?;
            write_u32(&mut caller, size, 0, "args_sizes_get")?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "args_get",
        |_c: Ctx<'_>, _argv: i32, _buf: i32| -> Result<i32> { Ok(SUCCESS) },
    )?;
    linker.func_wrap(
        m,
        "clock_time_get",
        |mut caller: Ctx<'_>, id: i32, _precision: i64, out: i32| -> Result<i32> {
            let (wall, mono) = {
                let clock = &caller.data().clock;
                // The monotonic clock starts at 1 s so that a module never sees 0 (some treat it as unset).
                let mono = u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
                (clock.unix_nanos(), mono.saturating_add(1_000_000_000))
            };
            let t = match id {
                0 => wall,
                1..=3 => mono,
                _ => return Ok(INVAL),
            };
            write_u64(&mut caller, out, t, "clock_time_get")?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "clock_res_get",
        |mut caller: Ctx<'_>, id: i32, out: i32| -> Result<i32> {
            if !(0..=3).contains(&id) {
                return Ok(INVAL);
            }
            write_u64(&mut caller, out, 1, "clock_res_get")?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(
        m,
        "random_get",
        |mut caller: Ctx<'_>, buf: i32, len: i32| -> Result<i32> {
            let len = len as u32 as usize;
            // Checked before allocating: a hostile length must trap, not make the host allocate 4 GiB.
            let mem_len = super::memory(&caller)?.data_size(&caller);
            if (buf as u32 as usize).saturating_add(len) > mem_len {
                return Err(wasmtime::Error::msg(format!(
                    "out-of-bounds guest pointer in random_get: {buf:#x}+{len} past memory size {mem_len:#x}"
                )));
            }
            let mut bytes = vec![0u8; len];
            if caller.data_mut().random.fill(&mut bytes).is_err() {
                return Ok(IO);
            }
            write(&mut caller, buf, &bytes, "random_get")?;
            Ok(SUCCESS)
        },
    )?;
    linker.func_wrap(m, "proc_exit", |_c: Ctx<'_>, code: i32| -> Result<()> {
        Err(wasmtime::Error::msg(format!(
            "plugin called proc_exit({code})"
        )))
    })?;
    linker.func_wrap(m, "sched_yield", |_c: Ctx<'_>| -> Result<i32> {
        Ok(SUCCESS)
    })?;
    // Envoy (proxy-wasm-cpp-host) polls nothing: it reports 0 events and success, which the Go runtime
    // needs (its `usleep` and scheduler idle loop call `poll_oneoff` with clock subscriptions and treat an
    // error as fatal; with no events they just go on). Time passes only with the host's clock.
    linker.func_wrap(
        m,
        "poll_oneoff",
        |mut caller: Ctx<'_>, _in: i32, _out: i32, _n: i32, nevents: i32| -> Result<i32> {
            write_u32(&mut caller, nevents, 0, "poll_oneoff")?;
            Ok(SUCCESS)
        },
    )?;
    // Envoy answers ENOSYS: none of the flags mean anything for stdout/stderr here. The Go runtime sets
    // O_NONBLOCK on stdio at start and goes on when that fails.
    linker.func_wrap(
        m,
        "fd_fdstat_set_flags",
        |_c: Ctx<'_>, _fd: i32, _flags: i32| -> Result<i32> { Ok(NOSYS) },
    )?;
    if m == "wasi_snapshot_preview1" {
        // Emscripten (C++ SDK) helpers Envoy also provides.
        linker.func_wrap(
            "env",
            "emscripten_notify_memory_growth",
            |_c: Ctx<'_>, _i: i32| -> Result<()> { Ok(()) },
        )?;
        linker.func_wrap(
            "env",
            "pthread_equal",
            |_c: Ctx<'_>, a: i32, b: i32| -> Result<i32> { Ok(i32::from(a == b)) },
        )?;
    }
    Ok(())
}
