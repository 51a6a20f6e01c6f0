//! The state table the daemon keeps in sync: pf, or the memory table. The control
//! requests that make synthetic traffic work on the memory table only.

use std::time::Instant;

use crate::engine::TableOp;
use crate::table::memory::RecordOp;
use crate::table::pf::{PfDevice, PfTable};
use crate::table::{key_of, Key, MemoryTable, StateTable, TableError, TableStats};

/// pf's table as the daemon needs it beyond [`StateTable`]: what the device says of the
/// running kernel, for the creator id and the start-up log.
pub(in crate::daemon) trait PfKernelTable: StateTable {
    /// pf's hostid (`None` where the kernel does not tell).
    fn hostid(&mut self) -> std::io::Result<Option<u32>>;
    /// How states are listed, killed and imported on this kernel.
    fn describe(&self) -> String;
}

impl<D: PfDevice> PfKernelTable for PfTable<D> {
    fn hostid(&mut self) -> std::io::Result<Option<u32>> {
        self.device_mut().hostid()
    }

    fn describe(&self) -> String {
        self.device().describe()
    }
}

/// The most states the parent makes room for at the engine's word
/// ([`Table::reserve_states`]), whatever it asks: the engine process is not trusted (it
/// handles the peers' bytes), so the bound is the parent's own. Two million states, twice
/// issue 14's million: the memory table's index for them (8-byte entries at most 3/4
/// full, written whole when it is sized) is 32 MB, its slot list and deadline links
/// address space only (their pages are mapped as states arrive).
pub(in crate::daemon) const MOST_STATES_RESERVED: u64 = 2_000_000;

/// An operation of the engine's as the parent carries it out.
#[derive(Debug)]
pub(in crate::daemon) enum EngineOp<'a> {
    /// Whole, as [`crate::daemon::privsep::ToParent::decode`] makes it.
    Whole(&'a TableOp),
    /// An import or update with its state still in the checked compact record its
    /// frame carried, for a table that takes that ([`Table::takes_records`]).
    Record(RecordOp<'a>),
}

impl EngineOp<'_> {
    /// The state an import, update or delete names.
    pub(in crate::daemon) fn key(&self) -> Option<Key> {
        match self {
            EngineOp::Whole(TableOp::Import(s) | TableOp::Update(s)) => Some(key_of(s)),
            EngineOp::Whole(TableOp::Delete { creatorid, id }) => Some((*creatorid, *id)),
            EngineOp::Whole(TableOp::Clear { .. }) => None,
            EngineOp::Record(r) => Some(r.record().peeked().key()),
        }
    }

    /// An import or an update: a write of a state's content.
    pub(in crate::daemon) fn writes(&self) -> bool {
        matches!(
            self,
            EngineOp::Record(_) | EngineOp::Whole(TableOp::Import(_) | TableOp::Update(_))
        )
    }

    /// Counts the operation's outcome.
    pub(in crate::daemon) fn count(
        &self,
        stats: &mut TableStats,
        result: &Result<usize, TableError>,
    ) {
        match (self, result) {
            (EngineOp::Whole(op), _) => stats.record(op, result),
            (EngineOp::Record(RecordOp::Import(_)), Ok(n)) => stats.imported += *n as u64,
            (EngineOp::Record(RecordOp::Update(_)), Ok(n)) => stats.updated += *n as u64,
            (EngineOp::Record(_), Err(e)) => stats.count(e.outcome()),
        }
    }
}

/// The daemon's table.
pub(in crate::daemon) enum Table {
    /// The memory table.
    Memory(Box<MemoryTable>),
    /// pf, through /dev/pf (made only where there is one).
    #[cfg_attr(
        not(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd"))),
        allow(dead_code)
    )]
    Pf(Box<dyn PfKernelTable>),
}

impl Table {
    /// The table, as the engine's operations need it.
    pub(in crate::daemon) fn state_table(&mut self) -> &mut dyn StateTable {
        match self {
            Table::Memory(m) => m.as_mut(),
            Table::Pf(p) => p.as_mut(),
        }
    }

    /// The table, to read its counters.
    pub(in crate::daemon) fn state_table_ref(&self) -> &dyn StateTable {
        match self {
            Table::Memory(m) => m.as_ref(),
            Table::Pf(p) => p.as_ref(),
        }
    }

    /// Whether the table takes imports and updates as their compact records
    /// ([`EngineOp::Record`]): the memory table keeps them so, and is spared making a
    /// `State` of each.
    pub(in crate::daemon) fn takes_records(&self) -> bool {
        matches!(self, Table::Memory(_))
    }

    /// Carries out an engine operation (see [`StateTable::apply`]).
    pub(in crate::daemon) fn apply(
        &mut self,
        now: Instant,
        op: &EngineOp,
    ) -> Result<usize, TableError> {
        match (self, op) {
            (table, EngineOp::Whole(op)) => table.state_table().apply(now, op),
            (Table::Memory(m), EngineOp::Record(op)) => m.apply_record(now, op),
            (Table::Pf(p), EngineOp::Record(op)) => p.apply(now, &op.table_op()?),
        }
    }

    /// Makes room for `asked` more states than the table holds, at most
    /// [`MOST_STATES_RESERVED`] (and the table's own limit), ahead of a peer's bulk
    /// (`ToParent::ReserveStates`); returns for how many. The memory table only: pf
    /// sizes its own table, and is left alone (`None`).
    pub(in crate::daemon) fn reserve_states(&mut self, asked: u64) -> Option<usize> {
        match self {
            Table::Memory(m) => Some(m.reserve_states(asked.min(MOST_STATES_RESERVED) as usize)),
            Table::Pf(_) => None,
        }
    }

    /// pf's table, if that is the table.
    pub(in crate::daemon) fn pf(&mut self) -> Option<&mut dyn PfKernelTable> {
        match self {
            Table::Memory(_) => None,
            Table::Pf(p) => Some(p.as_mut()),
        }
    }

    /// The memory table, if that is the table.
    pub(in crate::daemon) fn memory(&mut self) -> Option<&mut MemoryTable> {
        match self {
            Table::Memory(m) => Some(m),
            Table::Pf(_) => None,
        }
    }

    /// States held (pf: at the last listing).
    pub(in crate::daemon) fn len(&self) -> usize {
        match self {
            Table::Memory(m) => m.len(),
            Table::Pf(p) => p.len(),
        }
    }

    /// States the table expired itself (pf expires its own, unseen).
    pub(in crate::daemon) fn expired_count(&self) -> u64 {
        match self {
            Table::Memory(m) => m.expired_count(),
            Table::Pf(_) => 0,
        }
    }

    /// The table's name in logs and status.
    pub(in crate::daemon) fn name(&self) -> &'static str {
        match self {
            Table::Memory(_) => "memory",
            Table::Pf(_) => "pf",
        }
    }
}

/// Opens pf's table: on the BSDs, /dev/pf read-write.
#[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
pub(in crate::daemon) fn open_pf() -> anyhow::Result<Table> {
    // What the device chose and pf's hostid are logged by the caller, after detaching.
    let dev = crate::table::pf::KernelPf::open(crate::sys::PfDev::open()?);
    Ok(Table::Pf(Box::new(crate::table::pf::PfTable::new(dev))))
}

/// Elsewhere there is no pf.
#[cfg(not(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd"))))]
pub(in crate::daemon) fn open_pf() -> anyhow::Result<Table> {
    anyhow::bail!(
        "--table pf: there is no pf on this system (FreeBSD and OpenBSD only); use --table memory"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::MemoryConfig;
    use crate::wire::RecordFormat;

    /// A pf device that holds nothing and takes every call: `reserve_states` must not
    /// reach it.
    struct EmptyDevice;

    impl PfDevice for EmptyDevice {
        fn format(&self) -> RecordFormat {
            RecordFormat::FreeBsd1400
        }
        fn list(&mut self, out: &mut Vec<u8>) -> std::io::Result<crate::table::pf::Listing> {
            out.clear();
            Ok(crate::table::pf::Listing::Complete)
        }
        fn add(&mut self, _: &[u8]) -> std::io::Result<()> {
            panic!("reserving room wrote to pf")
        }
        fn kill(&mut self, _: u32, _: u64) -> std::io::Result<u32> {
            panic!("reserving room wrote to pf")
        }
    }

    /// The engine's word is bounded by the parent's own: whatever it asks, the memory
    /// table makes room for at most [`MOST_STATES_RESERVED`] (and its limit) more
    /// states; pf is left alone.
    #[test]
    fn the_parent_bounds_the_room_the_engine_asks_for() {
        let mut memory = Table::Memory(Box::new(MemoryTable::new(MemoryConfig::new(1))));
        assert_eq!(memory.reserve_states(1_000), Some(1_000));
        assert_eq!(
            memory.reserve_states(u64::MAX),
            Some(MOST_STATES_RESERVED as usize)
        );
        let mut limited = Table::Memory(Box::new(MemoryTable::new(MemoryConfig {
            limit: Some(500),
            ..MemoryConfig::new(1)
        })));
        assert_eq!(limited.reserve_states(1_000), Some(500));
        let mut pf = Table::Pf(Box::new(PfTable::new(EmptyDevice)));
        assert_eq!(pf.reserve_states(1_000_000), None);
        assert_eq!(pf.len(), 0);
    }
}
