//! Metrics: define, increment, record, get. Metrics are shared by all VMs of a shared state (Envoy stats are
//! process-wide); defining the same name and kind again returns the same id.

use wasmtime::{Linker, Result};

use super::{read_string, write_u32, write_u64, Ctx};
use crate::host::HostState;
use crate::shared::Metric;
use crate::types::{MetricKind, Status};

pub(super) fn add(linker: &mut Linker<HostState>) -> Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Ctx<'_>, kind: i32, np: i32, ns: i32, out: i32| -> Result<i32> {
            const NAME: &str = "proxy_define_metric";
            let kind = match kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                other => {
                    caller
                        .data()
                        .violation(NAME, format!("invalid metric type {other}"));
                    return Ok(Status::BadArgument.code());
                }
            };
            let name = read_string(&caller, np, ns, NAME)?;
            let id = {
                let mut w = caller.data().shared.lock();
                match w
                    .metrics
                    .iter()
                    .position(|m| m.name == name && m.kind == kind)
                {
                    Some(i) => i as u32 + 1,
                    None => {
                        w.metrics.push(Metric {
                            name,
                            kind,
                            value: 0,
                            samples: Vec::new(),
                        });
                        w.metrics.len() as u32
                    }
                }
            };
            write_u32(&mut caller, out, id, NAME)?;
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |caller: Ctx<'_>, id: i32, offset: i64| -> Result<i32> {
            let mut w = caller.data().shared.lock();
            let Some(m) = w.metrics.get_mut((id as u32 as usize).wrapping_sub(1)) else {
                return Ok(Status::NotFound.code());
            };
            match m.kind {
                MetricKind::Counter if offset >= 0 => m.value = m.value.saturating_add(offset),
                MetricKind::Gauge => m.value = m.value.saturating_add(offset),
                _ => return Ok(Status::BadArgument.code()),
            }
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |caller: Ctx<'_>, id: i32, value: i64| -> Result<i32> {
            let mut w = caller.data().shared.lock();
            let Some(m) = w.metrics.get_mut((id as u32 as usize).wrapping_sub(1)) else {
                return Ok(Status::NotFound.code());
            };
            let value = value as u64;
            match m.kind {
                // Envoy adds the value to a counter and sets a gauge.
                MetricKind::Counter => m.value = m.value.saturating_add(value as i64),
                MetricKind::Gauge => m.value = value as i64,
                MetricKind::Histogram => {
                    m.value = value as i64;
                    m.samples.push(value);
                }
            }
            Ok(Status::Ok.code())
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Ctx<'_>, id: i32, out: i32| -> Result<i32> {
            let value = {
                let w = caller.data().shared.lock();
                let Some(m) = w.metrics.get((id as u32 as usize).wrapping_sub(1)) else {
                    return Ok(Status::NotFound.code());
                };
                if m.kind == MetricKind::Histogram {
                    return Ok(Status::BadArgument.code());
                }
                m.value
            };
            write_u64(&mut caller, out, value as u64, "proxy_get_metric")?;
            Ok(Status::Ok.code())
        },
    )?;
    Ok(())
}
