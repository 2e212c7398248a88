//! Deciding what happens to a statement: the cheap pre-filter that lets every statement not naming the history
//! table pass untouched.

pub mod prefilter;

pub use prefilter::Prefilter;
