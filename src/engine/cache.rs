//! The state cache: every state the engine knows, keyed by (creatorid, id), and the
//! send queues threaded through it.
//!
//! Each state sits in at most one queue at a time, as in the kernels (`sync_state`).
//! The queues are intrusive doubly linked lists over a slab, so moving a state from one
//! queue to another (a compressed update upgraded to a full one, an insert acknowledged)
//! is O(1) and costs no allocation.

use std::collections::HashMap;
use std::time::Instant;

use crate::state::State;

/// A state's identity: (creatorid, id).
pub type Key = (u32, u64);

/// The send queues, in the order their messages are written into a packet (FreeBSD's
/// order: inserts, acks, full updates, compressed updates, deletes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// INS: a new local state.
    Ins = 0,
    /// INS_ACK: acknowledging a peer's insert that asked for it.
    InsAck = 1,
    /// UPD: a full update (a peer asked for this state).
    Upd = 2,
    /// UPD_C: a compressed update.
    UpdC = 3,
    /// DEL_C: a deleted local state.
    DelC = 4,
}

impl Queue {
    /// Every queue, in packet order.
    pub const ALL: [Queue; 5] = [
        Queue::Ins,
        Queue::InsAck,
        Queue::Upd,
        Queue::UpdC,
        Queue::DelC,
    ];
}

const NIL: u32 = u32::MAX;

/// What the engine keeps per state.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The state as last seen (locally, or from a peer).
    pub state: State,
    /// The queue the state is in, if any.
    pub queue: Option<Queue>,
    prev: u32,
    next: u32,
    /// Local updates since the state was last sent (TCP only), for `maxupd`.
    pub updates: u8,
    /// When a peer last updated this state: local updates within 2 s are sent at once.
    pub peer_updated: Option<Instant>,
    /// Never sent (no-sync states, pfsync's own traffic).
    pub nosync: bool,
    /// Deleted locally; kept until its DEL_C is sent.
    pub deleted: bool,
}

impl Entry {
    /// A new entry, in no queue.
    pub fn new(state: State) -> Entry {
        Entry {
            state,
            queue: None,
            prev: NIL,
            next: NIL,
            updates: 0,
            peer_updated: None,
            nosync: false,
            deleted: false,
        }
    }
}

/// The cache is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheFull;

/// States by key, with the send queues.
#[derive(Debug)]
pub struct Cache {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    index: HashMap<Key, u32>,
    heads: [u32; 5],
    tails: [u32; 5],
    lens: [usize; 5],
    limit: usize,
}

impl Cache {
    /// An empty cache holding at most `limit` states.
    pub fn new(limit: usize) -> Cache {
        Cache {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            heads: [NIL; 5],
            tails: [NIL; 5],
            lens: [0; 5],
            limit,
        }
    }

    /// Number of states.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The slot of a state.
    pub fn find(&self, key: Key) -> Option<u32> {
        self.index.get(&key).copied()
    }

    /// The entry in a slot. Slots come from `find`/`insert` and stay valid until
    /// `remove`; a stale one is a bug in the engine.
    pub fn get(&self, slot: u32) -> &Entry {
        self.slots[slot as usize]
            .as_ref()
            .expect("a live cache slot")
    }

    /// The entry in a slot, mutably.
    pub fn get_mut(&mut self, slot: u32) -> &mut Entry {
        self.slots[slot as usize]
            .as_mut()
            .expect("a live cache slot")
    }

    /// Adds a state that is not in the cache yet.
    pub fn insert(&mut self, entry: Entry) -> Result<u32, CacheFull> {
        let key = (entry.state.creatorid, entry.state.id);
        debug_assert!(!self.index.contains_key(&key));
        if self.index.len() >= self.limit {
            return Err(CacheFull);
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                self.slots.push(Some(entry));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, slot);
        Ok(slot)
    }

    /// Removes a state (out of its queue first) and returns it.
    pub fn remove(&mut self, slot: u32) -> Entry {
        self.dequeue(slot);
        let entry = self.slots[slot as usize].take().expect("a live cache slot");
        self.index.remove(&(entry.state.creatorid, entry.state.id));
        self.free.push(slot);
        entry
    }

    /// Puts a state at the tail of `queue`, taking it out of any other queue first.
    pub fn enqueue(&mut self, slot: u32, queue: Queue) {
        if self.get(slot).queue == Some(queue) {
            return;
        }
        self.dequeue(slot);
        let q = queue as usize;
        let tail = self.tails[q];
        {
            let e = self.get_mut(slot);
            e.queue = Some(queue);
            e.prev = tail;
            e.next = NIL;
        }
        if tail == NIL {
            self.heads[q] = slot;
        } else {
            self.get_mut(tail).next = slot;
        }
        self.tails[q] = slot;
        self.lens[q] += 1;
    }

    /// Takes a state out of its queue, if it is in one.
    pub fn dequeue(&mut self, slot: u32) {
        let (queue, prev, next) = {
            let e = self.get(slot);
            match e.queue {
                Some(q) => (q as usize, e.prev, e.next),
                None => return,
            }
        };
        if prev == NIL {
            self.heads[queue] = next;
        } else {
            self.get_mut(prev).next = next;
        }
        if next == NIL {
            self.tails[queue] = prev;
        } else {
            self.get_mut(next).prev = prev;
        }
        self.lens[queue] -= 1;
        let e = self.get_mut(slot);
        e.queue = None;
        e.prev = NIL;
        e.next = NIL;
    }

    /// Number of states in a queue.
    pub fn queue_len(&self, queue: Queue) -> usize {
        self.lens[queue as usize]
    }

    /// The first state of a queue.
    pub fn front(&self, queue: Queue) -> Option<u32> {
        let head = self.heads[queue as usize];
        (head != NIL).then_some(head)
    }

    /// Every slot, for bulk sends and clears.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.index.values().copied()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn state(id: u64) -> State {
        State {
            id,
            creatorid: 7,
            ..State::default()
        }
    }

    fn order(c: &Cache, q: Queue) -> Vec<u64> {
        let mut out = Vec::new();
        let mut at = c.front(q);
        while let Some(s) = at {
            out.push(c.get(s).state.id);
            let next = c.get(s).next;
            at = (next != NIL).then_some(next);
        }
        out
    }

    #[test]
    fn queues_move_states_in_constant_time() {
        let mut c = Cache::new(10);
        let slots: Vec<u32> = (1..=4)
            .map(|i| c.insert(Entry::new(state(i))).unwrap())
            .collect();
        for &s in &slots {
            c.enqueue(s, Queue::UpdC);
        }
        assert_eq!(order(&c, Queue::UpdC), vec![1, 2, 3, 4]);
        c.enqueue(slots[1], Queue::Upd);
        assert_eq!(order(&c, Queue::UpdC), vec![1, 3, 4]);
        assert_eq!(order(&c, Queue::Upd), vec![2]);
        c.remove(slots[3]);
        c.dequeue(slots[0]);
        assert_eq!(order(&c, Queue::UpdC), vec![3]);
        assert_eq!(c.queue_len(Queue::UpdC), 1);
        assert_eq!(c.len(), 3);
        // A freed slot is reused.
        let again = c.insert(Entry::new(state(9))).unwrap();
        assert_eq!(again, slots[3]);
    }

    #[test]
    fn the_limit_is_kept() {
        let mut c = Cache::new(1);
        c.insert(Entry::new(state(1))).unwrap();
        assert_eq!(c.insert(Entry::new(state(2))).unwrap_err(), CacheFull);
    }
}
