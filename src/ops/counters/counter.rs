//! [`Counter`]: one 64-bit number that any thread adds to, sets and reads
//! (the counters and gauges of [`super::Counters`], a connection's dropped
//! lines), with `AtomicU64`'s methods, also where the target has no 64-bit
//! atomics (32-bit MIPS). No thread owns it and no channel is involved.

use std::sync::atomic::Ordering;

#[cfg(target_has_atomic = "64")]
type Cell = std::sync::atomic::AtomicU64;
#[cfg(not(target_has_atomic = "64"))]
type Cell = Locked;

/// A u64 shared between threads. Counts and byte totals must go on past
/// 2^32 on every gateway, but 32-bit MIPS (mipsel, MT7621 routers) has no
/// 64-bit atomics: where the target has them this is an `AtomicU64`,
/// elsewhere a `u64` behind a mutex (`Locked`), which costs nothing that
/// matters at a few touches per command. The methods are `AtomicU64`'s
/// that the relay uses, same names and arguments; the mutex is stronger
/// than any `Ordering`, so there it is not needed.
#[derive(Default, Debug)]
pub struct Counter(Cell);

impl Counter {
    pub const fn new(value: u64) -> Counter {
        Counter(Cell::new(value))
    }

    pub fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }

    pub fn store(&self, value: u64, order: Ordering) {
        self.0.store(value, order)
    }

    /// Adds `n` (wrapping at 2^64, as `AtomicU64` does); returns the value before.
    pub fn fetch_add(&self, n: u64, order: Ordering) -> u64 {
        self.0.fetch_add(n, order)
    }

    /// Sets the value to `change(value)` unless that is `None`; returns the
    /// value before, as `Ok` when it changed and `Err` when not.
    pub fn fetch_update(
        &self,
        set_order: Ordering,
        fetch_order: Ordering,
        change: impl FnMut(u64) -> Option<u64>,
    ) -> Result<u64, u64> {
        self.0.fetch_update(set_order, fetch_order, change)
    }

    /// Adds one.
    pub fn add(&self) {
        self.fetch_add(1, Ordering::Relaxed);
    }
}

/// The u64 behind a mutex for targets without 64-bit atomics. Compiled on
/// every target under `cargo test`, so that the host's unit tests prove it.
#[cfg(any(test, not(target_has_atomic = "64")))]
#[derive(Default, Debug)]
pub(crate) struct Locked(std::sync::Mutex<u64>);

#[cfg(any(test, not(target_has_atomic = "64")))]
impl Locked {
    pub(crate) const fn new(value: u64) -> Locked {
        Locked(std::sync::Mutex::new(value))
    }

    fn value(&self) -> std::sync::MutexGuard<'_, u64> {
        crate::ops::sync::lock(&self.0)
    }

    pub(crate) fn load(&self, _: Ordering) -> u64 {
        *self.value()
    }

    pub(crate) fn store(&self, value: u64, _: Ordering) {
        *self.value() = value;
    }

    pub(crate) fn fetch_add(&self, n: u64, _: Ordering) -> u64 {
        let mut value = self.value();
        let before = *value;
        *value = before.wrapping_add(n);
        before
    }

    pub(crate) fn fetch_update(
        &self,
        _: Ordering,
        _: Ordering,
        mut change: impl FnMut(u64) -> Option<u64>,
    ) -> Result<u64, u64> {
        let mut value = self.value();
        let before = *value;
        match change(before) {
            Some(after) => {
                *value = after;
                Ok(before)
            }
            None => Err(before),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    const TWO_TO_32: u64 = 1 << 32;

    /// Both kinds of cell, whichever this target uses for `Counter`.
    fn each_kind(check: impl Fn(&dyn Fn(u64) -> Box<dyn Cellish>)) {
        check(&|v| Box::new(Counter::new(v)));
        check(&|v| Box::new(Locked::new(v)));
    }

    trait Cellish {
        fn load(&self) -> u64;
        fn store(&self, v: u64);
        fn fetch_add(&self, n: u64) -> u64;
        fn take_one(&self) -> Result<u64, u64>;
    }

    impl Cellish for Counter {
        fn load(&self) -> u64 {
            Counter::load(self, Relaxed)
        }
        fn store(&self, v: u64) {
            Counter::store(self, v, Relaxed)
        }
        fn fetch_add(&self, n: u64) -> u64 {
            Counter::fetch_add(self, n, Relaxed)
        }
        fn take_one(&self) -> Result<u64, u64> {
            self.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
        }
    }

    impl Cellish for Locked {
        fn load(&self) -> u64 {
            Locked::load(self, Relaxed)
        }
        fn store(&self, v: u64) {
            Locked::store(self, v, Relaxed)
        }
        fn fetch_add(&self, n: u64) -> u64 {
            Locked::fetch_add(self, n, Relaxed)
        }
        fn take_one(&self) -> Result<u64, u64> {
            self.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
        }
    }

    #[test]
    fn counting_one_by_one_goes_past_two_to_the_32() {
        each_kind(|new| {
            let c = new(TWO_TO_32 - 2);
            for _ in 0..4 {
                c.fetch_add(1);
            }
            assert_eq!(c.load(), TWO_TO_32 + 2);
            assert_eq!(c.take_one(), Ok(TWO_TO_32 + 2));
            assert_eq!(c.take_one(), Ok(TWO_TO_32 + 1));
            assert_eq!(c.load(), TWO_TO_32);
            assert_eq!(c.take_one(), Ok(TWO_TO_32));
            assert_eq!(c.load(), TWO_TO_32 - 1, "no borrow lost at the boundary");
        });
    }

    #[test]
    fn byte_totals_set_and_added_beyond_four_gib_read_back_whole() {
        each_kind(|new| {
            let c = new(0);
            c.store(5 * TWO_TO_32 + 7);
            assert_eq!(c.load(), 5 * TWO_TO_32 + 7);
            assert_eq!(c.fetch_add(3 * TWO_TO_32 - 7), 5 * TWO_TO_32 + 7);
            assert_eq!(c.load(), 8 * TWO_TO_32);
            c.store(0);
            assert_eq!(c.take_one(), Err(0), "stops at zero");
            c.store(u64::MAX);
            assert_eq!(c.fetch_add(2), u64::MAX);
            assert_eq!(c.load(), 1, "wraps at 2^64 as AtomicU64 does");
        });
    }

    #[test]
    fn threads_adding_at_once_lose_nothing_across_two_to_the_32() {
        let start = TWO_TO_32 - 1000;
        let counter = std::sync::Arc::new(Counter::new(start));
        let locked = std::sync::Arc::new(Locked::new(start));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (counter, locked) = (counter.clone(), locked.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.add();
                        locked.fetch_add(1, Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("adder thread");
        }
        assert_eq!(counter.load(Relaxed), TWO_TO_32 + 3000);
        assert_eq!(locked.load(Relaxed), TWO_TO_32 + 3000);
    }

    /// The static mipsel build has no `AtomicU64` and fails only at the end
    /// of the suite: catch a new use in the first minute, on the host.
    #[test]
    fn no_source_file_but_this_one_names_the_64_bit_atomic() {
        fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("ops/counters/counter.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
                    if code
                        .into_iter()
                        .any(|l| l.contains(concat!("Atomic", "U64")))
                    {
                        found.push(path.display().to_string());
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(
            found.is_empty(),
            "use ops::counters::Counter instead in {found:?}"
        );
    }
}
