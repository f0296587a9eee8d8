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
//! `compare/fresh` compares the fresh plan (an action per remote secret, a
//! million at 1,000 primaries) with a copy, as apply of a saved plan does
//! after planning again: the yardstick `bench/run` divides each plan's time
//! by. (Until plan format 2 the yardstick was `fingerprints/converged`, a
//! walk over the converged observation; the ratios in BENCHMARKS.md before
//! then are to that.)
//!
//! `cargo bench --bench plan` runs every size; `MESHFORM_BENCH_SIZES=10,100`
//! picks sizes, and criterion's filter picks benchmarks
//! (`cargo bench --bench plan -- plan/converged`).

#[path = "support/meshes.rs"]
mod meshes;

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
        let built = live();
        let scenarios = meshes::scenarios(clusters);
        let inputs = live() - built;
        println!(
            "memory inputs/{clusters}: {:.1} MiB for the topologies and observations of {} scenarios",
            mib(inputs),
            scenarios.len()
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
    }
    criterion.final_summary();
}
