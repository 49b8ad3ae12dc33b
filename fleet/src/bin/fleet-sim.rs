//! `fleet-sim`: runs the fleet model and prints its table (Markdown) on stdout; progress and
//! wall time go to stderr.
//!
//! ```text
//! cargo run --release -p fleet --bin fleet-sim                 # the BENCHMARKS table
//! cargo run --release -p fleet --bin fleet-sim -- --compare    # the options compared at 10,000 pairs
//! cargo run --release -p fleet --bin fleet-sim -- --pairs 2000 --scenarios deploy --poll-interval 10
//! cargo run --release -p fleet --bin fleet-sim -- --xds --outage   # the xDS mode's tables
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cloudmap_balancer::discovery::DiscoveryOptions;
use fleet::cloud_map::ThrottleAnswer;
use fleet::quota::Quotas;
use fleet::report::{self, Row};
use fleet::xds::report::{self as xds_report, XdsRow};
use fleet::xds::{LostWakes, Outage};
use fleet::{Config, Scenario, XdsConfig, run};

const HELP: &str = "\
fleet-sim: the client's real discovery poller for N client-service pairs against an in-process
Cloud Map with the account's quotas, fed by the sync Lambda's real decisions, under paused time.

Options:
  --pairs N[,N...]              pairs (default 1000,10000,50000)
  --scenarios NAME[,NAME...]    steady, deploy, scale-out, load-sweep (default all)
  --compare                     compare discovery options at 10,000 pairs (or --pairs)
  --before                      the options before the fleet model: 5 s ±10 %, full refresh
                                every 60 s, throttling handled as an outage
  --poll-interval SECS          DiscoveryOptions::poll_interval
  --jitter-percent N            DiscoveryOptions::poll_jitter_percent
  --full-refresh SECS           DiscoveryOptions::full_refresh_interval
  --full-refresh-lb-health SECS DiscoveryOptions::full_refresh_interval_with_lb_health
  --throttle-max SECS           DiscoveryOptions::throttle_backoff_max
  --throttle-as-outage          answer throttled calls with a code the client does not know
  --quota-scale F               multiply every quota by F (default 1)
  --seed N                      seed (default 1)

xDS mode (the pairs fed by the cloudmap-xds server's replicas; see fleet/src/xds/mod.rs):
  --xds                         run it (default pairs 1000,10000,100000, scenarios steady,deploy;
                                the discovery options above apply to the pairs)
  --outage                      with --xds: also run each pair count through a 100-task
                                deployment while both replicas are down for 10 minutes
  --outage-only                 with --xds: only the outage runs
  --services N                  services in the account (default 100)
  --replicas N                  server replicas (default 2)
  --server-poll-interval SECS   the replicas' poll (CLOUDMAP_XDS_POLL_INTERVAL, default 2 s)
  --lost-wakes-every-loss        the crate before the fix: every failed reconnection wakes the
                                poller, and each makes a fallback poll (now only one that sets
                                the lost deadline does)
";

/// One discovery configuration to run.
#[derive(Debug, Clone)]
struct Variant {
    label: String,
    discovery: DiscoveryOptions,
    throttle: ThrottleAnswer,
}

#[derive(Debug)]
struct Args {
    pairs: Vec<usize>,
    scenarios: Vec<Scenario>,
    compare: bool,
    variant: Variant,
    quota_scale: f64,
    seed: u64,
    xds: bool,
    outage: bool,
    outage_only: bool,
    services: usize,
    replicas: usize,
    server_poll: Option<Duration>,
    lost_wakes_every_loss: bool,
}

fn secs(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("not a number of seconds: {value:?}"))
}

fn before() -> Variant {
    let mut discovery = DiscoveryOptions::default();
    discovery.poll_interval = Duration::from_secs(5);
    discovery.poll_jitter_percent = 10;
    discovery.full_refresh_interval = Duration::from_secs(60);
    discovery.full_refresh_interval_with_lb_health = Duration::from_secs(60);
    Variant {
        label: "before".into(),
        discovery,
        throttle: ThrottleAnswer::AsOutage,
    }
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        pairs: vec![1_000, 10_000, 50_000],
        scenarios: Scenario::ALL.to_vec(),
        compare: false,
        variant: Variant {
            label: "defaults".into(),
            discovery: DiscoveryOptions::default(),
            throttle: ThrottleAnswer::RequestLimitExceeded,
        },
        quota_scale: 1.0,
        seed: 1,
        xds: false,
        outage: false,
        outage_only: false,
        services: 100,
        replicas: 2,
        server_poll: None,
        lost_wakes_every_loss: false,
    };
    let mut pairs_given = false;
    let mut scenarios_given = false;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let d = &mut parsed.variant.discovery;
        match arg.as_str() {
            "--help" | "-h" => return Err(String::new()),
            "--pairs" => {
                pairs_given = true;
                parsed.pairs = value()?
                    .split(',')
                    .map(|n| n.trim().replace('_', "").parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--pairs: {e}"))?;
            }
            "--scenarios" => {
                scenarios_given = true;
                parsed.scenarios = value()?
                    .split(',')
                    .map(|n| Scenario::parse(n.trim()).ok_or_else(|| format!("no scenario {n:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--compare" => parsed.compare = true,
            "--before" => parsed.variant = before(),
            "--poll-interval" => d.poll_interval = secs(&value()?)?,
            "--jitter-percent" => {
                d.poll_jitter_percent = value()?.parse().map_err(|e| format!("{arg}: {e}"))?;
            }
            "--full-refresh" => d.full_refresh_interval = secs(&value()?)?,
            "--full-refresh-lb-health" => d.full_refresh_interval_with_lb_health = secs(&value()?)?,
            "--throttle-max" => d.throttle_backoff_max = secs(&value()?)?,
            "--throttle-as-outage" => parsed.variant.throttle = ThrottleAnswer::AsOutage,
            "--quota-scale" => {
                parsed.quota_scale = value()?.parse().map_err(|e| format!("{arg}: {e}"))?;
            }
            "--seed" => parsed.seed = value()?.parse().map_err(|e| format!("{arg}: {e}"))?,
            "--xds" => parsed.xds = true,
            "--lost-wakes-every-loss" => parsed.lost_wakes_every_loss = true,
            "--server-poll-interval" => parsed.server_poll = Some(secs(&value()?)?),
            "--outage" => parsed.outage = true,
            "--outage-only" => {
                parsed.outage = true;
                parsed.outage_only = true;
            }
            "--services" | "--replicas" => {
                let n: usize = value()?.parse().map_err(|e| format!("{arg}: {e}"))?;
                if n == 0 {
                    return Err(format!("{arg} must be at least 1"));
                }
                if arg == "--services" {
                    parsed.services = n;
                } else {
                    parsed.replicas = n;
                }
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if parsed.compare && !pairs_given {
        parsed.pairs = vec![10_000];
    }
    let xds_only = parsed.outage
        || parsed.services != 100
        || parsed.replicas != 2
        || parsed.server_poll.is_some()
        || parsed.lost_wakes_every_loss;
    if xds_only && !parsed.xds {
        return Err(
            "--outage, --services, --replicas, --server-poll-interval and --lost-wakes-every-loss need --xds".to_owned(),
        );
    }
    if parsed.xds && parsed.compare {
        return Err("--compare is for the polling mode".to_owned());
    }
    if parsed.xds && !pairs_given {
        parsed.pairs = vec![1_000, 10_000, 100_000];
    }
    if parsed.xds && !scenarios_given {
        parsed.scenarios = vec![Scenario::Steady, Scenario::RollingDeployment];
    }
    Ok(parsed)
}

/// The configurations `--compare` runs: the options before the model, each candidate change on
/// its own, and the defaults.
fn comparison() -> Vec<Variant> {
    let defaults = DiscoveryOptions::default();
    let with = |label: &str, change: &dyn Fn(&mut DiscoveryOptions)| {
        let mut discovery = before().discovery;
        change(&mut discovery);
        Variant {
            label: label.to_owned(),
            discovery,
            throttle: ThrottleAnswer::AsOutage,
        }
    };
    let mut variants = vec![
        before(),
        Variant {
            label: "before + throttling as a throttle".into(),
            throttle: ThrottleAnswer::RequestLimitExceeded,
            ..before()
        },
        with("before + full refresh 300 s with LB_HEALTH", &|d| {
            d.full_refresh_interval_with_lb_health = Duration::from_secs(300);
        }),
    ];
    for poll in [10, 15, 20, 25, 30] {
        let mut discovery = defaults.clone();
        discovery.poll_interval = Duration::from_secs(poll);
        variants.push(Variant {
            label: format!("defaults, poll {poll} s ±5 %"),
            discovery,
            throttle: ThrottleAnswer::RequestLimitExceeded,
        });
    }
    let mut wide = defaults;
    wide.poll_jitter_percent = 10;
    variants.push(Variant {
        label: format!(
            "defaults, jitter ±10 % (poll {} s)",
            wide.poll_interval.as_secs()
        ),
        discovery: wide,
        throttle: ThrottleAnswer::RequestLimitExceeded,
    });
    variants
}

fn describe(variant: &Variant, quotas: Quotas, seed: u64) -> String {
    let d = &variant.discovery;
    let s = |d: Duration| format!("{} s", d.as_secs_f64());
    format!(
        "{}: poll {} ±{} %, full refresh {} ({} with LB_HEALTH), backoff {}–{}, \
         throttle backoff up to {}; throttled calls answered {}; \
         quotas {}/s (burst {}) and {}/s; seed {seed}",
        variant.label,
        s(d.poll_interval),
        d.poll_jitter_percent,
        s(d.full_refresh_interval),
        s(d.full_refresh_interval_with_lb_health),
        s(d.backoff_base),
        s(d.backoff_max),
        s(d.throttle_backoff_max),
        match variant.throttle {
            ThrottleAnswer::RequestLimitExceeded => "RequestLimitExceeded",
            ThrottleAnswer::AsOutage => "as an outage",
        },
        quotas.discover_rate,
        quotas.discover_burst,
        quotas.revision_rate,
    )
}

#[allow(clippy::print_stderr)] // progress for the person running it
fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("fleet-sim: {message}\n");
            }
            eprint!("{HELP}");
            return ExitCode::from(2);
        }
    };
    let quotas = Quotas::AWS.scaled(args.quota_scale);
    let variants = if args.compare {
        comparison()
    } else {
        vec![args.variant.clone()]
    };
    let started = Instant::now();
    if args.xds {
        let mut server = DiscoveryOptions::default();
        server.poll_interval = args.server_poll.unwrap_or(server.poll_interval);
        for options in [&args.variant.discovery, &server] {
            if let Err(error) = options.validate_for_model() {
                eprintln!("fleet-sim: {error}");
                return ExitCode::from(2);
            }
        }
        run_xds(&args, quotas);
        eprintln!(
            "fleet-sim: done in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        return ExitCode::SUCCESS;
    }
    for variant in &variants {
        if let Err(error) = variant.discovery.validate_for_model() {
            eprintln!("fleet-sim: {error}");
            return ExitCode::from(2);
        }
    }
    if !args.compare {
        println!("{}\n", describe(&args.variant, quotas, args.seed));
    } else {
        for variant in &variants {
            println!("- {}", describe(variant, quotas, args.seed));
        }
        println!();
    }
    if args.compare {
        println!(
            "{}",
            report::header().replacen("| pairs |", "| configuration: pairs |", 1)
        );
    } else {
        println!("{}", report::header());
    }
    for variant in &variants {
        for &pairs in &args.pairs {
            for &scenario in &args.scenarios {
                let config = Config {
                    pairs,
                    scenario,
                    discovery: variant.discovery.clone(),
                    throttle: variant.throttle,
                    quotas,
                    seed: args.seed,
                };
                let began = Instant::now();
                let outcome = run(&config);
                let row = Row::of(&outcome);
                let mut line = report::line(&row);
                if args.compare {
                    // The first cell names the configuration too.
                    line = line.replacen("| ", &format!("| {}: ", variant.label), 1);
                }
                println!("{line}");
                eprintln!(
                    "fleet-sim: {} × {pairs} pairs × {scenario}: {:.1} s",
                    variant.label,
                    began.elapsed().as_secs_f64()
                );
            }
        }
    }
    eprintln!(
        "fleet-sim: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// The xDS mode: its table, then the outage table.
#[allow(clippy::print_stderr)] // progress for the person running it
fn run_xds(args: &Args, quotas: Quotas) {
    let config = |pairs: usize, scenario: Scenario| {
        let mut config = XdsConfig::new(pairs, scenario);
        config.services = args.services;
        config.replicas = args.replicas;
        if let Some(poll) = args.server_poll {
            config.server.poll_interval = poll;
        }
        if args.lost_wakes_every_loss {
            config.lost_wakes = LostWakes::EveryLoss;
        }
        config.client = args.variant.discovery.clone();
        config.throttle = args.variant.throttle;
        config.quotas = quotas;
        config.seed = args.seed;
        config
    };
    let example = config(1, Scenario::Steady);
    let ms = |d: Duration| d.as_millis();
    println!(
        "xDS mode: {} services × {} replicas, server poll {} s; pairs: {}; xDS source: start timeout {} s, \
         lost timeout {} s, retry {}–{} ms{}; push delay uniform over the fan-out measured for the streams one change \
         wakes per replica ({})\n",
        example.services,
        example.replicas,
        example.server.poll_interval.as_secs_f64(),
        describe(&args.variant, quotas, args.seed),
        example.xds.start_timeout.as_secs_f64(),
        example.xds.lost_timeout.as_secs_f64(),
        ms(example.xds.backoff_base),
        ms(example.xds.backoff_max),
        if args.lost_wakes_every_loss {
            ", every failed reconnection wakes the poller (the crate before the fix)"
        } else {
            ""
        },
        fleet::xds::MEASURED_PUSH
            .iter()
            .map(|(n, (low, high))| format!("up to {n}: {low}–{high} ms"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let mut runs: Vec<XdsConfig> = Vec::new();
    if !args.outage_only {
        for &pairs in &args.pairs {
            for &scenario in &args.scenarios {
                runs.push(config(pairs, scenario));
            }
        }
    }
    if args.outage {
        for &pairs in &args.pairs {
            let mut outage = config(pairs, Scenario::RollingDeployment);
            outage.outage = Some(Outage::TEN_MINUTES);
            runs.push(outage);
        }
    }
    println!("{}", xds_report::header());
    let mut outages = Vec::new();
    for config in &runs {
        let began = Instant::now();
        let row = XdsRow::of(&fleet::xds::run(config));
        println!("{}", xds_report::line(&row));
        eprintln!(
            "fleet-sim: xds × {} pairs × {}: {:.1} s",
            config.pairs,
            row.scenario,
            began.elapsed().as_secs_f64()
        );
        outages.extend(xds_report::outage_line(&row));
    }
    if !outages.is_empty() {
        println!("\n{}", xds_report::outage_header());
        for line in outages {
            println!("{line}");
        }
    }
}

/// Options are checked the way `Discovery::start` checks them, before hours of model time.
trait ValidateForModel {
    fn validate_for_model(&self) -> Result<(), String>;
}

impl ValidateForModel for DiscoveryOptions {
    fn validate_for_model(&self) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            cloudmap_balancer::discovery::Discovery::start(
                cloudmap_balancer::discovery::StaticSource::default(),
                "check",
                "check",
                self.clone(),
            )
            .map(drop)
            .map_err(|e| e.to_string())
        })
    }
}
