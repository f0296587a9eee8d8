//! The planner at scale: `plan`, `simulate` and `compare` on synthetic
//! meshes of 10 to 1,000 primaries (a thousand primaries hold about a million
//! remote secrets), fresh, converged and with a tenth of the clusters moved
//! to another network or removed.
//!
//! Time comes from criterion. Memory comes from a counting global allocator:
//! before the timed runs, each scenario is planned once and the heap's
//! high-water mark above what was live before the call is printed
//! (`memory ...` lines), next to the heap the scenario's inputs hold (the
//! size of a copy of them) and the two together.
//!
//! The yardsticks (`support/walk.rs`), both on the converged observation:
//! `fingerprints/converged` is plan format 1's fingerprints, the walk issue
//! 34's "within 2× of one walk" was written against, which `bench/run`
//! divides each plan's time by; `walk/converged` visits every remote secret
//! and binding Secret once, allocating nothing (the floor).
//! `compare/fresh` compares the fresh plan (an action per remote secret, a
//! million at 1,000 primaries) with a copy, as apply of a saved plan does
//! after planning again.
//!
//! `cargo bench --bench plan` runs every size; `MESHFORM_BENCH_SIZES=10,100`
//! picks sizes, and criterion's filter picks benchmarks
//! (`cargo bench --bench plan -- plan/converged`).
//!
//! `MESHFORM_BENCH_ONCE=plan/moved-10pct` (or `walk/converged`,
//! `fingerprints/converged`) runs that case once per size, through
//! [`callgrind_measured`], and nothing else: for instruction counts, which a shared
//! machine does not disturb (`bench/instructions`: callgrind collecting
//! inside it only).

#[path = "support/meshes.rs"]
mod meshes;
#[path = "support/walk.rs"]
mod walk;

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use meshform::plan::simulate::simulate;
use meshform::plan::{Options, compare, plan};

/// The binary's allocator (mimalloc, see src/main.rs), counting the bytes
/// live now and the most live since [`measure`] last reset the mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to mimalloc unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let out = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !out.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        out
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Runs `f` once: its result, its time, and the most heap it had live at
/// once on top of what was live before (its result included).
fn measure<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    let before = live();
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let out = f();
    let elapsed = started.elapsed();
    (out, elapsed, PEAK.load(Ordering::Relaxed) - before)
}

/// The heap `f`'s result holds once `f` is done: what building it from
/// nothing leaves live (shared strings counted once).
fn retained<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = live();
    let out = f();
    (out, live().saturating_sub(before))
}

/// The one case `MESHFORM_BENCH_ONCE` names, run once: callgrind's
/// `--toggle-collect` counts the instructions inside this function only.
#[inline(never)]
fn callgrind_measured<T>(f: impl FnOnce() -> T) -> T {
    black_box(f())
}

/// Valgrind's `CALLGRIND_START_INSTRUMENTATION` client request
/// (valgrind/valgrind.h and callgrind.h, amd64): `bench/instructions` runs
/// the mesh's building uninstrumented (`--instr-atstart=no`), several times
/// faster under valgrind. Run natively the sequence does nothing: the four
/// rotations add up to 128 bits and `xchg rbx, rbx` swaps a register with
/// itself.
fn start_instrumentation() {
    #[cfg(target_arch = "x86_64")]
    {
        // VG_USERREQ_TOOL_BASE('C', 'T') + 4, then five unused arguments.
        let request: [u64; 6] = [0x4354_0004, 0, 0, 0, 0, 0];
        // SAFETY: reads the six words at `request`, changes no register
        // (rdi is rotated back to itself, rdx is declared), touches no other memory.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") request.as_ptr(),
                inout("rdx") 0u64 => _,
                inout("rdi") 0u64 => _,
            );
        }
    }
}

/// The case `MESHFORM_BENCH_ONCE` names, at `clusters` primaries, with only
/// the inputs it needs built (under valgrind, building is most of the time).
fn run_once(case: &str, clusters: usize, options: &Options) {
    let topology = meshes::topology(clusters, meshes::networks(clusters));
    let scenario = |name: &str| match name {
        "fresh" => (topology.clone(), meshes::fresh(&topology)),
        "converged" => (topology.clone(), meshes::converged(&topology)),
        "moved-10pct" => (meshes::moved(&topology), meshes::converged(&topology)),
        "removed-10pct" => meshes::removed(&topology, &meshes::converged(&topology)),
        _ => panic!("no scenario {name}"),
    };
    match case.split_once('/') {
        Some(("plan", name)) => {
            let (topology, observed) = scenario(name);
            start_instrumentation();
            // Dropped inside, as criterion's timing of a plan includes its drop.
            let actions = callgrind_measured(|| {
                let planned = plan(&topology, &observed, options).expect("a synthetic mesh plans");
                planned.actions.len()
            });
            println!("once {case}/{clusters}: {actions} actions");
        }
        Some(("walk", "converged")) => {
            let (_, observed) = scenario("converged");
            start_instrumentation();
            println!(
                "once {case}/{clusters}: {:x}",
                callgrind_measured(|| walk::walk(&observed))
            );
        }
        Some(("fingerprints", "converged")) => {
            let (topology, observed) = scenario("converged");
            start_instrumentation();
            let entries = callgrind_measured(|| walk::fingerprints(&topology, &observed).len());
            println!("once {case}/{clusters}: {entries} entries");
        }
        _ => panic!("MESHFORM_BENCH_ONCE: plan/<scenario>, walk/converged or fingerprints/converged, not {case}"),
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn sizes() -> Vec<usize> {
    match std::env::var("MESHFORM_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("MESHFORM_BENCH_SIZES: comma-separated cluster counts")
            })
            .collect(),
        Err(_) => vec![10, 100, 500, 1000],
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let options = Options::default();
    for clusters in sizes() {
        if let Ok(case) = std::env::var("MESHFORM_BENCH_ONCE") {
            run_once(&case, clusters, &options);
            continue;
        }
        let built = live();
        let scenarios = meshes::scenarios(clusters);
        let inputs = live() - built;
        println!(
            "memory inputs/{clusters}: {:.1} MiB for the topologies and observations of {} scenarios",
            mib(inputs),
            scenarios.len()
        );
        // A copy shares what the observation shares (strings held once for
        // every secret that repeats them): built from nothing, the converged
        // observation holds them once more, which a copy's size leaves out.
        let topology = &scenarios[3].topology;
        let (rebuilt, built) = retained(|| meshes::converged(topology));
        let (copy, copied) = retained(|| rebuilt.clone());
        drop((copy, rebuilt));
        println!(
            "memory inputs/converged/{clusters}: {:.1} MiB built from nothing, {:.1} MiB a copy",
            mib(built),
            mib(copied)
        );

        let mut group = criterion.benchmark_group("plan");
        if clusters >= 500 {
            group.sample_size(10).measurement_time(Duration::from_secs(20));
        }
        for scenario in &scenarios {
            // The heap the scenario's own inputs hold: a copy of them weighs the same.
            let (copy, _, inputs) = measure(|| (scenario.topology.clone(), scenario.observed.clone()));
            drop(copy);
            let (planned, elapsed, peak) = measure(|| plan(&scenario.topology, &scenario.observed, &options));
            let planned = planned.expect("a synthetic mesh plans");
            println!(
                "memory plan/{}/{clusters}: peak {:.1} MiB above the inputs, {} actions, first run {:.3} s, inputs {:.1} MiB, together {:.1} MiB",
                scenario.name,
                mib(peak),
                planned.actions.len(),
                elapsed.as_secs_f64(),
                mib(inputs),
                mib(inputs + peak)
            );
            drop(planned);
            group.bench_with_input(BenchmarkId::new(scenario.name, clusters), scenario, |b, s| {
                b.iter(|| plan(black_box(&s.topology), black_box(&s.observed), &options))
            });
        }
        group.finish();

        // Simulate the fresh mesh's plan: what apply leaves.
        let fresh = &scenarios[0];
        let fresh_plan = plan(&fresh.topology, &fresh.observed, &options).expect("a fresh mesh plans");
        let mut group = criterion.benchmark_group("simulate");
        if clusters >= 500 {
            group.sample_size(10).measurement_time(Duration::from_secs(20));
        }
        let (copy, _, inputs) = measure(|| (fresh.observed.clone(), fresh_plan.clone()));
        drop(copy);
        let (after, _, peak) = measure(|| simulate(&fresh.observed, &fresh_plan, meshes::TOKEN_LIFETIME));
        println!(
            "memory simulate/fresh/{clusters}: peak {:.1} MiB (the converged observation it returns), inputs {:.1} MiB, together {:.1} MiB",
            mib(peak),
            mib(inputs),
            mib(inputs + peak)
        );
        drop(after);
        group.bench_function(BenchmarkId::new("fresh", clusters), |b| {
            b.iter(|| {
                simulate(
                    black_box(&fresh.observed),
                    black_box(&fresh_plan),
                    meshes::TOKEN_LIFETIME,
                )
            })
        });
        group.finish();

        // Apply of a saved plan plans again and compares: the fresh plan,
        // with an action per remote secret, is the largest comparison.
        let mut group = criterion.benchmark_group("compare");
        if clusters >= 500 {
            group.sample_size(10).measurement_time(Duration::from_secs(20));
        }
        let again = fresh_plan.clone();
        let (differences, _, peak) = measure(|| compare(&fresh_plan, &again));
        assert!(differences.is_empty());
        println!(
            "memory compare/fresh/{clusters}: peak {:.1} MiB, {} actions",
            mib(peak),
            fresh_plan.actions.len()
        );
        group.bench_function(BenchmarkId::new("fresh", clusters), |b| {
            b.iter(|| compare(black_box(&fresh_plan), black_box(&again)))
        });
        group.finish();
        drop(fresh_plan);

        // The yardsticks: one walk of the converged observation.
        let converged = &scenarios[3];
        let (copy, _, inputs) = measure(|| (converged.topology.clone(), converged.observed.clone()));
        drop(copy);
        let mut group = criterion.benchmark_group("fingerprints");
        if clusters >= 500 {
            group.sample_size(10).measurement_time(Duration::from_secs(20));
        }
        let (prints, _, peak) = measure(|| walk::fingerprints(&converged.topology, &converged.observed));
        println!(
            "memory fingerprints/converged/{clusters}: peak {:.1} MiB, {} entries, inputs {:.1} MiB, together {:.1} MiB",
            mib(peak),
            prints.len(),
            mib(inputs),
            mib(inputs + peak)
        );
        drop(prints);
        group.bench_function(BenchmarkId::new("converged", clusters), |b| {
            b.iter(|| walk::fingerprints(black_box(&converged.topology), black_box(&converged.observed)))
        });
        group.finish();
        let mut group = criterion.benchmark_group("walk");
        if clusters >= 500 {
            group.sample_size(10).measurement_time(Duration::from_secs(10));
        }
        let (_, _, peak) = measure(|| walk::walk(&converged.observed));
        println!(
            "memory walk/converged/{clusters}: peak {:.1} MiB, inputs {:.1} MiB, together {:.1} MiB",
            mib(peak),
            mib(inputs),
            mib(inputs + peak)
        );
        group.bench_function(BenchmarkId::new("converged", clusters), |b| {
            b.iter(|| walk::walk(black_box(&converged.observed)))
        });
        group.finish();
    }
    criterion.final_summary();
}
