//! Which CPUs the client and everything else run on. The client gets a core of its own, the
//! servers, HAProxy and moto the others, so a CPU hog on the client's core starves the client
//! and nothing else. Pinning goes through util-linux's `taskset` (this workspace forbids
//! `unsafe`, which `sched_setaffinity` would need).

use std::process::Command;

/// The client's core and the others'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CpuPlan {
    pub(crate) client: usize,
    pub(crate) others: Vec<usize>,
}

impl CpuPlan {
    /// The first allowed CPU for the client, the rest for everything else; `None` with fewer
    /// than two.
    pub(crate) fn from_allowed(allowed: &[usize]) -> Option<Self> {
        match allowed {
            [client, others @ ..] if !others.is_empty() => Some(Self {
                client: *client,
                others: others.to_vec(),
            }),
            _ => None,
        }
    }

    /// The others as a `taskset` CPU list, e.g. `1,2,3`.
    pub(crate) fn others_list(&self) -> String {
        self.others
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A CPU list as the kernel prints it (`0-3,6`), in order.
pub(crate) fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let mut bounds = part
            .trim()
            .splitn(2, '-')
            .map(|n| n.trim().parse::<usize>());
        match (bounds.next(), bounds.next()) {
            (Some(Ok(first)), None) => cpus.push(first),
            (Some(Ok(first)), Some(Ok(last))) if first <= last => cpus.extend(first..=last),
            _ => return Vec::new(),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// The CPUs this process may run on (`Cpus_allowed_list` in `/proc/self/status`).
pub(crate) fn allowed_cpus() -> Vec<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .map(parse_cpu_list)
        })
        .unwrap_or_default()
}

/// Pins every thread of this process to `cpus`; the processes it starts afterwards inherit it.
pub(crate) fn pin_self(cpus: &str) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("running taskset: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset -a -p -c {cpus} exited with {status}"))
    }
}

/// `program` to be run on `cpu` only (`taskset -c CPU PROGRAM ...`; `taskset` execs it, so the
/// child is the program itself).
pub(crate) fn on_cpu(cpu: Option<usize>, program: &std::path::Path) -> tokio::process::Command {
    match cpu {
        Some(cpu) => {
            let mut command = tokio::process::Command::new("taskset");
            command.arg("-c").arg(cpu.to_string()).arg(program);
            command
        }
        None => tokio::process::Command::new(program),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_as_the_kernel_prints_them() {
        assert_eq!(parse_cpu_list("0-1\n"), [0, 1]);
        assert_eq!(parse_cpu_list("0-3,6"), [0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("2,0"), [0, 2]);
        assert_eq!(parse_cpu_list("5"), [5]);
        assert!(parse_cpu_list("").is_empty());
        assert!(parse_cpu_list("3-1").is_empty());
        assert!(parse_cpu_list("a-b").is_empty());
    }

    #[test]
    fn the_client_gets_the_first_core_and_the_rest_the_others() {
        let plan = CpuPlan::from_allowed(&[0, 1]);
        assert_eq!(
            plan,
            Some(CpuPlan {
                client: 0,
                others: vec![1]
            })
        );
        let plan = CpuPlan::from_allowed(&[2, 3, 5]).unwrap_or(CpuPlan {
            client: 0,
            others: vec![],
        });
        assert_eq!((plan.client, plan.others_list()), (2, "3,5".to_owned()));
        assert_eq!(
            CpuPlan::from_allowed(&[0]),
            None,
            "one core cannot be split"
        );
        assert_eq!(CpuPlan::from_allowed(&[]), None);
    }
}
