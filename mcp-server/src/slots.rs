//! Counted slots per key with a cap per key and in total: a principal's requests in flight, its
//! open watch streams. A slot is given back when its [`Slot`] is dropped; a key holding no slot
//! is forgotten, so the table never holds more keys than slots in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The slots of one kind of resource.
#[derive(Debug)]
pub struct Slots {
    per_key: usize,
    total: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_key: HashMap<String, usize>,
}

/// Why no slot was given: the key's cap or the total cap, with the limit reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotRefusal {
    /// The key holds `per_key` slots already.
    Key(usize),
    /// `total` slots are in use.
    Total(usize),
}

/// One slot held; given back on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    key: String,
}

impl Slots {
    /// At most `per_key` slots per key and `total` in all.
    #[must_use]
    pub fn new(per_key: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_key,
            total,
            held: Mutex::new(Held::default()),
        })
    }

    /// Takes a slot for `key`.
    ///
    /// # Errors
    /// Which cap is reached.
    pub fn take(self: &Arc<Self>, key: &str) -> Result<Slot, SlotRefusal> {
        // The counts stay consistent whatever a panicking holder left behind: each change is
        // one increment or decrement.
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.total >= self.total {
            return Err(SlotRefusal::Total(self.total));
        }
        match held.by_key.get_mut(key) {
            Some(count) if *count >= self.per_key => return Err(SlotRefusal::Key(self.per_key)),
            Some(count) => *count += 1,
            // A per-key cap of 0 is refused by the configuration check.
            None => {
                held.by_key.insert(key.to_owned(), 1);
            }
        }
        held.total += 1;
        Ok(Slot {
            slots: self.clone(),
            key: key.to_owned(),
        })
    }

    /// Slots in use, in all.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        held.total = held.total.saturating_sub(1);
        if let Some(count) = held.by_key.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.by_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_key_and_in_total_and_slots_come_back_on_drop() {
        let slots = Slots::new(2, 3);
        let a1 = slots.take("a").unwrap();
        let _a2 = slots.take("a").unwrap();
        assert_eq!(slots.take("a").unwrap_err(), SlotRefusal::Key(2));
        let _b1 = slots.take("b").unwrap();
        assert_eq!(slots.take("c").unwrap_err(), SlotRefusal::Total(3));
        drop(a1);
        assert_eq!(slots.in_use(), 2);
        let _c1 = slots.take("c").unwrap();
        assert_eq!(slots.take("a").unwrap_err(), SlotRefusal::Total(3));
    }

    #[test]
    fn a_key_holding_nothing_is_forgotten() {
        let slots = Slots::new(1, 10);
        drop(slots.take("a").unwrap());
        drop(slots.take("b").unwrap());
        assert!(slots.held.lock().unwrap().by_key.is_empty());
        assert_eq!(slots.in_use(), 0);
    }
}
