//! A value made from its owner's data when first asked, and dropped when the data changes.

use std::sync::OnceLock;

/// What a view derives from its own data (a pod index, rank sets), kept until the data
/// changes: the owner resets it wherever it hands out its data to change. It follows from
/// the data, so two owners with equal data are equal whether or not either has made it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Derived<T>(OnceLock<T>);

impl<T> Derived<T> {
    /// The value, made by `make` if it has not been since the last reset.
    pub fn get_or_make(&self, make: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(make)
    }

    /// Drops the value: the data it was made from is about to change.
    pub fn reset(&mut self) {
        self.0 = OnceLock::new();
    }

    /// The value, if made, taken out.
    pub fn take(&mut self) -> Option<T> {
        self.0.take()
    }
}

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
