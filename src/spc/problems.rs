//! What a class's problems may cost: a class is a tenant's input, and one
//! provider serves every tenant on its node, so the work and memory spent
//! on reporting what is wrong with a class must stay linear in the class,
//! with small constants. Two tools, used by every check of `objects` and
//! `syncSecrets`:
//!
//! - [`Quoted`] shows a value the tenant wrote, cut to its start and its
//!   length *before* it is copied into a message, so a 7 MiB name repeated
//!   in a hundred problems costs a hundred short lines, not 700 MiB;
//! - [`Collector`] keeps the first [`Collector::SHOWN`] problems (and at
//!   most [`Collector::TEXT`] bytes of them) and only counts the rest, and
//!   formats a problem only when it will be shown.

pub use crate::error::Quoted;

/// The problems of a class: the first few kept, the rest counted.
#[derive(Debug)]
pub struct Collector<T> {
    shown: Vec<T>,
    bytes: usize,
    more: usize,
}

impl<T> Default for Collector<T> {
    fn default() -> Self {
        Collector {
            shown: Vec::new(),
            bytes: 0,
            more: 0,
        }
    }
}

/// A collected problem's text.
pub trait Text {
    /// What it says.
    fn text(&self) -> &str;
}

impl Text for String {
    fn text(&self) -> &str {
        self
    }
}

impl<T: Text> Collector<T> {
    /// Problems kept in full.
    pub const SHOWN: usize = 20;
    /// Bytes of problem text kept in all: what fits, with the count of the
    /// rest, in the message the driver gets (`error::MAX_MESSAGE`).
    pub const TEXT: usize = 3 * 1024;

    /// Whether a next problem would be kept.
    fn room(&self) -> bool {
        self.shown.len() < Self::SHOWN && self.bytes < Self::TEXT
    }

    /// Records a problem, built by `make` only if it is kept.
    pub fn add_with(&mut self, make: impl FnOnce() -> T) {
        if self.room() {
            let p = make();
            self.bytes += p.text().len();
            self.shown.push(p);
        } else {
            self.more += 1;
        }
    }

    /// Records a problem.
    pub fn add(&mut self, problem: T) {
        self.add_with(|| problem);
    }

    /// Records every problem of `problems`.
    pub fn extend(&mut self, problems: impl IntoIterator<Item = T>) {
        for p in problems {
            self.add(p);
        }
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.shown.is_empty() && self.more == 0
    }

    /// How many problems were found in all.
    pub fn count(&self) -> usize {
        self.shown.len() + self.more
    }

    /// The problems kept, and how many more there were.
    pub fn into_parts(self) -> (Vec<T>, usize) {
        (self.shown, self.more)
    }

    /// The problems as one message: the kept ones, then how many more.
    pub fn message(&self) -> String {
        let more = self.more;
        let mut text = self.shown.iter().map(Text::text).collect::<Vec<_>>().join("; ");
        if more > 0 {
            text.push_str(&format!(
                "; and {more} more problem{}",
                if more == 1 { "" } else { "s" }
            ));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_value_is_cut_before_it_is_shown() {
        assert_eq!(Quoted("a\"b").to_string(), r#""a\"b""#);
        let long = "é".repeat(1000);
        let shown = Quoted(&long).to_string();
        assert!(shown.ends_with("…(2000 bytes)"), "{shown}");
        assert!(shown.len() < 200, "{shown}");
    }

    #[test]
    fn a_collector_keeps_the_first_problems_and_counts_the_rest_without_building_them() {
        let mut c = Collector::<String>::default();
        let mut built = 0;
        for i in 0..1000 {
            c.add_with(|| {
                built += 1;
                format!("problem {i}")
            });
        }
        assert_eq!(built, Collector::<String>::SHOWN);
        assert_eq!(c.count(), 1000);
        let m = c.message();
        assert!(m.starts_with("problem 0; problem 1;"), "{m}");
        assert!(m.ends_with("problem 19; and 980 more problems"), "{m}");
        let mut big = Collector::<String>::default();
        for _ in 0..10 {
            big.add("x".repeat(10_000));
        }
        assert_eq!(big.into_parts().0.len(), 1, "the text budget stops it first");
    }
}
