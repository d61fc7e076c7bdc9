//! Compact unwind tables for the eBPF program: a binary's `.eh_frame` turned into sorted
//! [`UnwindRow`]s that the kernel side can binary-search and follow at sample time.
//!
//! The in-kernel walk cannot run a DWARF interpreter, so each address range of the call frame
//! information is reduced to one of the few rules x86-64 code actually uses (the `CFA_*` and
//! `RBP_*` constants of `amprof_abi`): the CFA is rsp or rbp plus an offset, the PLT's
//! expression, or gcc's realigned-frame expression; the return address is at CFA - 8; the
//! caller's rbp is unchanged or saved at CFA or rbp plus a multiple of 8. Anything else
//! becomes a `CFA_NONE` row, where the kernel stops and copies the stack for userspace
//! (framehop) to unwind, as it does for code without a table.
//!
//! The bytes are a sampled process's binary, so they are hostile: section ranges are checked
//! against the file, the output, the FDEs and the work per FDE are bounded, and a malformed
//! FDE is left out (its addresses fall back like a gap) rather than failing the whole file.

use amprof_abi::{
    CFA_END, CFA_NONE, CFA_PLT, CFA_RBP, CFA_RBP_DEREF, CFA_RSP, CFA_SIGNAL, RBP_AT_CFA,
    RBP_AT_RBP, RBP_UNCHANGED, UnwindRow,
};
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, CommonInformationEntry, EhFrame, EhFrameOffset, EndianSlice,
    LittleEndian, Reader as _, Register, RegisterRule, UnwindContext, UnwindSection,
    UnwindTableRow, constants,
};
use object::{Object as _, ObjectSection as _};
use rustc_hash::FxHashMap;

use super::elf;

/// A binary's unwind table: rows keyed by the binary's own (ELF virtual) addresses.
///
/// The table's base is 0: a row's `pc` is the svma itself, so a mapping's `bias` for the eBPF
/// side is the binary's load bias (process address of its virtual address 0, as
/// [`elf::load_bias`] computes). This keeps the format to 32-bit `pc`s without a per-table
/// base, at the price that binaries with code at or above 4 GiB get no table (see [`build`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnwindTable {
    /// Sorted by `pc`, strictly increasing; adjacent rows never have the same rule (merged).
    pub rows: Vec<UnwindRow>,
    pub stats: BuildStats,
}

/// What building one binary's table found (its FDEs and rows), for reporting how much of the
/// binary the kernel walk covers (not the kernel's tables of a recording: that is
/// [`super::kernel_tables::KernelTableStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// FDEs whose rules are in the table (some perhaps only partly: see `fdes_overlapping`).
    pub fdes: usize,
    /// FDEs left out because gimli could not parse or evaluate them, or their CIE is longer
    /// than any compiler emits: broken or hostile entries. Their addresses fall back.
    pub fdes_skipped: usize,
    /// FDEs that start inside an earlier one (broken or hostile files): an address covered
    /// by several FDEs takes the rules of the one that starts first (see [`build`]).
    pub fdes_overlapping: usize,
    /// Rows in the table, `CFA_NONE` ones included.
    pub rows: usize,
    /// Rows of gimli's tables whose rules the row format cannot express (before merging):
    /// the kernel walk stops there and the stack is copied.
    pub unsupported_rows: usize,
    /// `CFA_NONE` rows at the end of an FDE with no FDE right after it.
    pub gap_rows: usize,
    /// `.eh_frame` could not be read to its end (a malformed entry): FDEs after it are missing.
    pub truncated: bool,
}

impl UnwindTable {
    /// The row covering `svma` (a virtual address of the binary), found as the eBPF program
    /// finds it: the last row whose `pc` is at or below it. `None` below the first row or at
    /// 4 GiB and above.
    pub fn lookup(&self, svma: u64) -> Option<UnwindRow> {
        let pc = u32::try_from(svma).ok()?;
        let after = self.rows.partition_point(|row| row.pc <= pc);
        after.checked_sub(1).map(|i| self.rows[i])
    }

    /// Bytes the rows take in the eBPF map.
    pub fn bytes(&self) -> usize {
        self.rows.len() * size_of::<UnwindRow>()
    }
}

/// A CIE longer than this is not from a compiler (they are 20 to 40 bytes): its FDEs are left
/// out. Bounds the work of each FDE, since gimli evaluates the CIE's initial instructions
/// again for every FDE that uses it.
const MAX_CIE_BYTES: usize = 256;

const RSP: Register = Register(7);
const RBP: Register = Register(6);
const RIP: Register = Register(16);

type Bytes<'d> = EndianSlice<'d, LittleEndian>;
type Cie<'d> = CommonInformationEntry<Bytes<'d>>;

/// Builds the table of the x86-64 ELF file in `data` (the bytes of the whole file, or the
/// vDSO's image).
///
/// `None` when there is no usable `.eh_frame`: not an x86-64 ELF executable or shared object,
/// no `.eh_frame`, section headers pointing outside the file, nothing covered; when an FDE
/// covers an address at or above 4 GiB (rows hold 32-bit addresses with base 0); or when the
/// table would have more than `max_rows` rows (more than `max_rows` FDEs also means `None`:
/// each is at least one row before merging).
///
/// Where FDEs overlap (broken or hostile files), every address takes the rules of the FDE
/// that starts lowest among those covering it (the first in the section on a tie); FDEs
/// gimli cannot evaluate are left out.
pub fn build(data: &[u8], max_rows: usize) -> Option<UnwindTable> {
    let file = object::File::parse(data).ok()?;
    if file.format() != object::BinaryFormat::Elf
        || file.architecture() != object::Architecture::X86_64
        || !file.is_little_endian()
        || !file.is_64()
        || !matches!(
            file.kind(),
            object::ObjectKind::Executable | object::ObjectKind::Dynamic
        )
    {
        return None;
    }
    let section = file.section_by_name(".eh_frame")?;
    let bytes = data.get(elf::section_range(data.len(), section.file_range())?)?;
    // Bases of the pointer encodings FDEs may use (pc-relative needs only .eh_frame's own).
    let mut bases = BaseAddresses::default().set_eh_frame(section.address());
    if let Some(text) = file.section_by_name(".text") {
        bases = bases.set_text(text.address());
    }
    if let Some(got) = file.section_by_name(".got") {
        bases = bases.set_got(got.address());
    }
    if let Some(hdr) = file.section_by_name(".eh_frame_hdr") {
        bases = bases.set_eh_frame_hdr(hdr.address());
    }
    let mut eh_frame = EhFrame::new(bytes, LittleEndian);
    eh_frame.set_address_size(8);
    let mut stats = BuildStats::default();
    let mut cies = Cies::default();
    let fdes = list_fdes(&eh_frame, &bases, &mut cies, max_rows, &mut stats)?;

    let mut rows = Rows {
        rows: Vec::new(),
        covered_end: 0,
        max_rows,
    };
    let mut ctx = UnwindContext::new();
    let mut fde_rows = Vec::new();
    for fde in &fdes {
        fde_rows.clear();
        let Some(unsupported) =
            evaluate(&eh_frame, &bases, &mut cies, &mut ctx, fde, &mut fde_rows)
        else {
            stats.fdes_skipped += 1;
            continue;
        };
        stats.fdes += 1;
        stats.unsupported_rows += unsupported;
        if fde.start < rows.covered_end {
            stats.fdes_overlapping += 1;
        }
        for &(start, end, row) in &fde_rows {
            // Clipped to the FDE (gimli's last rows may run past it) and to what earlier
            // FDEs covered.
            let start = start.max(rows.covered_end);
            let end = end.min(fde.end);
            if start >= end {
                continue;
            }
            if !rows.rows.is_empty() && start > rows.covered_end {
                stats.gap_rows += usize::from(rows.push(rows.covered_end, NONE)?);
            }
            rows.push(start, row)?;
            rows.covered_end = end;
        }
    }
    if rows.rows.is_empty() {
        return None;
    }
    // Past the last FDE: nothing (`covered_end` is at most 2^32; at 2^32 no lookup reaches).
    if rows.covered_end <= u64::from(u32::MAX) {
        stats.gap_rows += usize::from(rows.push(rows.covered_end, NONE)?);
    }
    stats.rows = rows.rows.len();
    Some(UnwindTable {
        rows: rows.rows,
        stats,
    })
}

/// The rows being built, in address order.
struct Rows {
    rows: Vec<UnwindRow>,
    /// End of the addresses covered so far (the last FDE's end).
    covered_end: u64,
    max_rows: usize,
}

impl Rows {
    /// Appends `row` from `pc` on, merged into the last row when their rules are the same;
    /// true if it is a row of its own. `None` beyond `max_rows`.
    fn push(&mut self, pc: u64, row: UnwindRow) -> Option<bool> {
        let pc = u32::try_from(pc).ok()?;
        let same = |last: &UnwindRow| {
            (last.rule, last.cfa_offset_low, last.rbp_offset)
                == (row.rule, row.cfa_offset_low, row.rbp_offset)
        };
        if self.rows.last().is_some_and(same) {
            return Some(false);
        }
        if self.rows.len() >= self.max_rows {
            return None;
        }
        self.rows.push(UnwindRow { pc, ..row });
        Some(true)
    }
}

/// An FDE's range and where it is in `.eh_frame`.
struct FdeRef {
    start: u64,
    end: u64,
    offset: usize,
}

/// The FDEs of `.eh_frame` that cover something, sorted by start (then section order).
/// `None` if one covers an address at or above 4 GiB, or if there are more than `max_fdes`.
fn list_fdes<'d>(
    eh_frame: &EhFrame<Bytes<'d>>,
    bases: &BaseAddresses,
    cies: &mut Cies<'d>,
    max_fdes: usize,
    stats: &mut BuildStats,
) -> Option<Vec<FdeRef>> {
    let mut fdes = Vec::new();
    let mut entries = eh_frame.entries(bases);
    loop {
        let partial = match entries.next() {
            Ok(None) => break,
            Ok(Some(CieOrFde::Cie(_))) => continue,
            Ok(Some(CieOrFde::Fde(partial))) => partial,
            Err(_) => {
                stats.truncated = true;
                break;
            }
        };
        let fde = match partial.parse(|section, bases, offset| cies.get(section, bases, offset)) {
            Ok(fde) if fde.cie().entry_len() <= MAX_CIE_BYTES => fde,
            _ => {
                stats.fdes_skipped += 1;
                continue;
            }
        };
        if fde.len() == 0 {
            continue;
        }
        let start = fde.initial_address();
        let end = start.checked_add(fde.len())?;
        if end > 1 << 32 {
            return None;
        }
        if fdes.len() >= max_fdes {
            return None;
        }
        fdes.push(FdeRef {
            start,
            end,
            offset: partial.offset(),
        });
    }
    fdes.sort_unstable_by_key(|f| (f.start, f.offset));
    Some(fdes)
}

/// Parsed CIEs by offset: each is parsed once however many FDEs use it.
#[derive(Default)]
struct Cies<'d> {
    parsed: FxHashMap<usize, gimli::Result<Cie<'d>>>,
}

impl<'d> Cies<'d> {
    fn get(
        &mut self,
        section: &EhFrame<Bytes<'d>>,
        bases: &BaseAddresses,
        offset: EhFrameOffset<usize>,
    ) -> gimli::Result<Cie<'d>> {
        self.parsed
            .entry(offset.0)
            .or_insert_with(|| section.cie_from_offset(bases, offset))
            .clone()
    }
}

/// Appends the rows of `fde` to `out` as (start, end, rule), and returns how many of them are
/// beyond the format; `None` if gimli fails on it (`out` then holds a part to discard).
fn evaluate<'d>(
    eh_frame: &EhFrame<Bytes<'d>>,
    bases: &BaseAddresses,
    cies: &mut Cies<'d>,
    ctx: &mut UnwindContext<usize>,
    fde: &FdeRef,
    out: &mut Vec<(u64, u64, UnwindRow)>,
) -> Option<usize> {
    let Ok(fde) = eh_frame.fde_from_offset(bases, EhFrameOffset(fde.offset), |s, b, o| {
        cies.get(s, b, o)
    }) else {
        return None;
    };
    let signal = fde.is_signal_trampoline();
    // The return address is where the CIE says, which for x86-64 compilers is rip's column.
    let rip_column = fde.cie().return_address_register() == RIP;
    let mut table = gimli::UnwindTable::new(eh_frame, bases, ctx, &fde).ok()?;
    let mut unsupported = 0;
    // Each row takes at least one instruction byte of the FDE: bounded by its length.
    loop {
        match table.next_row() {
            Ok(Some(row)) => {
                let rule = if signal {
                    Some(only(CFA_SIGNAL))
                } else if rip_column {
                    convert(row, eh_frame)
                } else {
                    None
                };
                let rule = rule.unwrap_or_else(|| {
                    unsupported += 1;
                    NONE
                });
                out.push((row.start_address(), row.end_address(), rule));
            }
            Ok(None) => return Some(unsupported),
            Err(_) => return None,
        }
    }
}

/// A row with only a CFA rule: the others are meaningless for it, and zero so that rows merge.
const fn only(cfa: u8) -> UnwindRow {
    UnwindRow {
        pc: 0,
        cfa_offset_low: 0,
        rule: cfa,
        rbp_offset: 0,
    }
}

const NONE: UnwindRow = only(CFA_NONE);

/// The row for gimli's `row` (its `pc` left 0), or `None` if the format cannot express it.
fn convert(row: &UnwindTableRow<usize>, eh_frame: &EhFrame<Bytes<'_>>) -> Option<UnwindRow> {
    match row.register(RIP) {
        Some(RegisterRule::Offset(-8)) => {}
        // `.cfi_undefined rip`: the outermost frame (_start, a thread's start routine).
        Some(RegisterRule::Undefined) => return Some(only(CFA_END)),
        _ => return None,
    }
    // The caller's rsp is the CFA, unless a rule says otherwise (setcontext and the like).
    if row.register(RSP).is_some() {
        return None;
    }
    let (cfa, cfa_offset, plt_threshold) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let offset = u64::try_from(*offset).ok()?;
            match *register {
                RSP => (CFA_RSP, offset, None),
                RBP => (CFA_RBP, offset, None),
                _ => return None,
            }
        }
        CfaRule::Expression(expression) => {
            cfa_expression(expression.get(eh_frame).ok()?.0.slice())?
        }
    };
    let (rbp, rbp_offset) = match row.register(RBP) {
        None | Some(RegisterRule::Undefined | RegisterRule::SameValue) => (RBP_UNCHANGED, 0),
        Some(RegisterRule::Offset(offset)) => (RBP_AT_CFA, eighths(offset)?),
        Some(RegisterRule::Expression(expression)) => (
            RBP_AT_RBP,
            eighths(rbp_expression(expression.get(eh_frame).ok()?.0.slice())?)?,
        ),
        _ => return None,
    };
    let rbp_offset = match plt_threshold {
        // The PLT rule keeps its threshold where the rbp offset goes: rbp must be untouched.
        Some(threshold) if rbp == RBP_UNCHANGED => threshold,
        Some(_) => return None,
        None => rbp_offset,
    };
    UnwindRow::new(0, cfa | rbp, cfa_offset, rbp_offset)
}

/// `offset` in units of 8 bytes, if it is a multiple of 8 that fits.
fn eighths(offset: i64) -> Option<i8> {
    if offset % 8 != 0 {
        return None;
    }
    i8::try_from(offset / 8).ok()
}

/// The CFA rule of the two expressions x86-64 toolchains emit, as (rule, cfa_offset, PLT
/// threshold):
/// - the PLT's `DW_OP_breg7 (rsp) K; DW_OP_breg16 (rip) 0; DW_OP_lit15; DW_OP_and; DW_OP_litN;
///   DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus` (rsp + K, + 8 in the half of each 16-byte
///   stub after its push): `CFA_PLT` with K and N;
/// - gcc's realigned frames, `DW_OP_breg6 (rbp) -K; DW_OP_deref`: `CFA_RBP_DEREF` with K.
fn cfa_expression(bytes: &[u8]) -> Option<(u8, u64, Option<i8>)> {
    let mut expr = EndianSlice::new(bytes, LittleEndian);
    let op = expr.read_u8().ok()?;
    let offset = expr.read_sleb128().ok()?;
    if op == constants::DW_OP_breg7.0 {
        let offset = u64::try_from(offset).ok()?;
        expect(&mut expr, &[constants::DW_OP_breg16])?;
        (expr.read_sleb128().ok()? == 0).then_some(())?;
        expect(&mut expr, &[constants::DW_OP_lit15, constants::DW_OP_and])?;
        let threshold = expr.read_u8().ok()?.checked_sub(constants::DW_OP_lit0.0)?;
        (threshold <= 31).then_some(())?;
        expect(
            &mut expr,
            &[
                constants::DW_OP_ge,
                constants::DW_OP_lit3,
                constants::DW_OP_shl,
                constants::DW_OP_plus,
            ],
        )?;
        expr.is_empty()
            .then_some((CFA_PLT, offset, Some(threshold as i8)))
    } else if op == constants::DW_OP_breg6.0 {
        let offset = u64::try_from(offset.checked_neg()?).ok()?;
        expect(&mut expr, &[constants::DW_OP_deref])?;
        expr.is_empty().then_some((CFA_RBP_DEREF, offset, None))
    } else {
        None
    }
}

/// Reads `ops` (operations without operands) from `expr`, or `None` if it holds others.
fn expect(expr: &mut Bytes<'_>, ops: &[constants::DwOp]) -> Option<()> {
    for op in ops {
        (expr.read_u8().ok()? == op.0).then_some(())?;
    }
    Some(())
}

/// M of `DW_OP_breg6 (rbp) M`: where a realigned frame saves the caller's rbp.
fn rbp_expression(bytes: &[u8]) -> Option<i64> {
    let mut expr = EndianSlice::new(bytes, LittleEndian);
    (expr.read_u8().ok()? == constants::DW_OP_breg6.0).then_some(())?;
    let offset = expr.read_sleb128().ok()?;
    expr.is_empty().then_some(offset)
}

#[cfg(test)]
mod tests {
    use std::{
        path::PathBuf,
        time::{Duration, Instant},
    };

    use amprof_abi::{CFA_MASK, RBP_MASK};
    use gimli::{
        EhFrameHdr, EvaluationResult, Location, ParsedEhFrameHdr, UnwindExpression, Value,
    };

    use super::*;

    /// More than any binary tested needs.
    const MAX_ROWS: usize = 1 << 24;
    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
    /// A stock distribution binary, built without frame pointers.
    const PYTHON: &str = "/usr/bin/python3";
    /// A small stock binary, for the tests that build thousands of tables.
    const LS: &str = "/usr/bin/ls";

    fn read(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// What every table must be, whatever its input: rows strictly sorted, no two adjacent
    /// rows alike, only known rules.
    fn check_shape(table: &UnwindTable) {
        assert_eq!(table.stats.rows, table.rows.len());
        assert!(!table.rows.is_empty());
        for pair in table.rows.windows(2) {
            assert!(pair[0].pc < pair[1].pc, "{pair:?}");
            let rule = |r: &UnwindRow| (r.rule, r.cfa_offset(), r.rbp_offset);
            assert_ne!(rule(&pair[0]), rule(&pair[1]), "{pair:?}");
        }
        for row in &table.rows {
            assert!(row.rule & CFA_MASK <= CFA_END, "{row:?}");
            assert!(row.rule & RBP_MASK <= RBP_AT_RBP, "{row:?}");
        }
    }

    /// Registers at a sample at `rip`; other registers than these three have made-up values.
    #[derive(Clone, Copy, Debug)]
    struct Regs {
        rip: u64,
        rsp: u64,
        rbp: u64,
    }

    impl Regs {
        fn at(rip: u64) -> Self {
            Self {
                rip,
                rsp: 0x7ffc_1230_0000 + (rip & 0xff0),
                rbp: 0x7ffc_1238_0040,
            }
        }

        fn get(&self, register: Register) -> u64 {
            match register {
                RSP => self.rsp,
                RBP => self.rbp,
                RIP => self.rip,
                Register(n) => 0x1111_0000 + u64::from(n) * 0x100,
            }
        }
    }

    /// The stack, and all of memory: a made-up word at every address.
    fn memory(address: u64) -> u64 {
        address.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17)
    }

    /// One unwind step: where the caller's frame is.
    #[derive(Debug, PartialEq, Eq)]
    enum Step {
        /// The table has no rule for it (`CFA_NONE`), or gimli needs more than registers and
        /// memory.
        GiveUp,
        End,
        Signal,
        Frame {
            cfa: u64,
            return_address_at: u64,
            caller_rbp: u64,
        },
    }

    /// The step `row` prescribes, taken as the eBPF program takes it.
    fn row_step(row: UnwindRow, regs: Regs) -> Step {
        let offset = row.cfa_offset();
        let cfa = match row.rule & CFA_MASK {
            CFA_RSP => regs.rsp + offset,
            CFA_RBP => regs.rbp + offset,
            CFA_PLT => {
                let pushed = (regs.rip & 15) as i64 >= i64::from(row.rbp_offset);
                regs.rsp + offset + if pushed { 8 } else { 0 }
            }
            CFA_RBP_DEREF => memory(regs.rbp - offset),
            CFA_END => return Step::End,
            CFA_SIGNAL => return Step::Signal,
            _ => return Step::GiveUp,
        };
        let saved = i64::from(row.rbp_offset) * 8;
        let caller_rbp = match row.rule & RBP_MASK {
            RBP_AT_CFA => memory(cfa.wrapping_add_signed(saved)),
            RBP_AT_RBP => memory(regs.rbp.wrapping_add_signed(saved)),
            _ => regs.rbp,
        };
        Step::Frame {
            cfa,
            return_address_at: cfa - 8,
            caller_rbp,
        }
    }

    /// gimli's own reading of a binary's CFI, its FDEs found through the binary search table
    /// of `.eh_frame_hdr` and its expressions run by gimli's evaluator: the independent side
    /// of the comparison.
    struct Oracle<'d> {
        eh_frame: EhFrame<Bytes<'d>>,
        bases: BaseAddresses,
        hdr: ParsedEhFrameHdr<Bytes<'d>>,
    }

    impl<'d> Oracle<'d> {
        fn new(data: &'d [u8]) -> Self {
            let file = object::File::parse(data).unwrap();
            let section = |name| {
                let section = file.section_by_name(name).unwrap();
                (section.address(), section.data().unwrap())
            };
            let (eh_frame_svma, eh_frame) = section(".eh_frame");
            let (hdr_svma, hdr) = section(".eh_frame_hdr");
            let bases = BaseAddresses::default()
                .set_eh_frame(eh_frame_svma)
                .set_eh_frame_hdr(hdr_svma);
            let mut eh_frame = EhFrame::new(eh_frame, LittleEndian);
            eh_frame.set_address_size(8);
            let hdr = EhFrameHdr::new(hdr, LittleEndian).parse(&bases, 8).unwrap();
            Self {
                eh_frame,
                bases,
                hdr,
            }
        }

        /// The (start, end) of every FDE of the search table.
        fn fdes(&self) -> Vec<(u64, u64)> {
            let table = self.hdr.table().unwrap();
            let mut entries = table.iter(&self.bases);
            let mut fdes = Vec::new();
            while let Some((_, pointer)) = entries.next().unwrap() {
                let offset = table.pointer_to_offset(pointer).unwrap();
                let fde = self
                    .eh_frame
                    .fde_from_offset(&self.bases, offset, EhFrame::cie_from_offset)
                    .unwrap();
                fdes.push((fde.initial_address(), fde.end_address()));
            }
            fdes
        }

        /// The step gimli's rules give at `regs.rip`; `None` where no FDE covers it.
        fn step(&self, ctx: &mut UnwindContext<usize>, regs: Regs) -> Option<Step> {
            let table = self.hdr.table().unwrap();
            let fde = match table.fde_for_address(
                &self.eh_frame,
                &self.bases,
                regs.rip,
                EhFrame::cie_from_offset,
            ) {
                Ok(fde) => fde,
                Err(gimli::Error::NoUnwindInfoForAddress) => return None,
                Err(e) => panic!("{:#x}: {e}", regs.rip),
            };
            if fde.is_signal_trampoline() {
                return Some(Step::Signal);
            }
            let row = fde
                .unwind_info_for_address(&self.eh_frame, &self.bases, ctx, regs.rip)
                .unwrap();
            let encoding = fde.cie().encoding();
            let run = |expression: &UnwindExpression<usize>| -> Option<u64> {
                let expression = expression.get(&self.eh_frame).ok()?;
                let mut evaluation = expression.evaluation(encoding);
                let mut result = evaluation.evaluate().ok()?;
                loop {
                    result = match result {
                        EvaluationResult::Complete => break,
                        EvaluationResult::RequiresRegister { register, .. } => evaluation
                            .resume_with_register(Value::Generic(regs.get(register)))
                            .ok()?,
                        EvaluationResult::RequiresMemory { address, .. } => evaluation
                            .resume_with_memory(Value::Generic(memory(address)))
                            .ok()?,
                        _ => return None,
                    };
                }
                match evaluation.as_result() {
                    [
                        gimli::Piece {
                            location: Location::Address { address },
                            ..
                        },
                    ] => Some(*address),
                    _ => None,
                }
            };
            let return_address_rule = row.register(RIP);
            if return_address_rule == Some(RegisterRule::Undefined) {
                return Some(Step::End);
            }
            let cfa = match row.cfa() {
                CfaRule::RegisterAndOffset { register, offset } => {
                    regs.get(*register).wrapping_add_signed(*offset)
                }
                CfaRule::Expression(expression) => match run(expression) {
                    Some(cfa) => cfa,
                    None => return Some(Step::GiveUp),
                },
            };
            let return_address_at = match return_address_rule {
                Some(RegisterRule::Offset(offset)) => cfa.wrapping_add_signed(offset),
                _ => return Some(Step::GiveUp),
            };
            let caller_rbp = match row.register(RBP) {
                None | Some(RegisterRule::SameValue | RegisterRule::Undefined) => Some(regs.rbp),
                Some(RegisterRule::Offset(offset)) => Some(memory(cfa.wrapping_add_signed(offset))),
                Some(RegisterRule::ValOffset(offset)) => Some(cfa.wrapping_add_signed(offset)),
                Some(RegisterRule::Register(register)) => Some(regs.get(register)),
                Some(RegisterRule::Expression(expression)) => run(&expression).map(memory),
                Some(RegisterRule::ValExpression(expression)) => run(&expression),
                Some(_) => None,
            };
            Some(caller_rbp.map_or(Step::GiveUp, |caller_rbp| Step::Frame {
                cfa,
                return_address_at,
                caller_rbp,
            }))
        }
    }

    /// Builds the table of `data` and checks it against gimli at `samples` addresses spread
    /// over the FDEs, their last bytes and the bytes just past them. Returns the table and
    /// how many of the addresses gimli has rules for the table falls back on.
    fn compare_with_gimli(name: &str, data: &[u8], samples: usize) -> (UnwindTable, f64) {
        let started = Instant::now();
        let table = build(data, MAX_ROWS).unwrap_or_else(|| panic!("{name}: no table"));
        let took = started.elapsed();
        check_shape(&table);
        assert_eq!(table.rows.last().unwrap().rule, CFA_NONE, "{name}");
        let oracle = Oracle::new(data);
        let fdes: Vec<_> = oracle.fdes().into_iter().filter(|f| f.0 < f.1).collect();
        assert!(!fdes.is_empty(), "{name}");
        let mut ctx = UnwindContext::new();
        let mut random = 0x2545_f491_4f6c_dd1d_u64;
        let (mut compared, mut gave_up, mut uncovered) = (0, 0, 0);
        for i in 0..samples {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let (start, end) = fdes[(random % fdes.len() as u64) as usize];
            let address = match i % 8 {
                0 => start,
                1 => end - 1,
                2 => end,
                _ => start + (random >> 32) % (end - start),
            };
            let regs = Regs::at(address);
            let row = table.lookup(address);
            match oracle.step(&mut ctx, regs) {
                None => {
                    // No FDE: the table must not claim the address.
                    assert!(
                        row.is_none_or(|r| r.rule == CFA_NONE),
                        "{name}: {address:#x} has no FDE, yet {row:?}"
                    );
                    uncovered += 1;
                }
                Some(expected) => {
                    let row = row.unwrap_or_else(|| panic!("{name}: no row for {address:#x}"));
                    match row_step(row, regs) {
                        Step::GiveUp => gave_up += 1,
                        step => {
                            assert_eq!(step, expected, "{name}: {address:#x}, {row:?}");
                            compared += 1;
                        }
                    }
                }
            }
        }
        println!(
            "{name}: {} rows, {} bytes, built in {took:?} (debug build); {:?}; of {samples} \
             addresses: {compared} same as gimli, {gave_up} fall back, {uncovered} not covered",
            table.rows.len(),
            table.bytes(),
            table.stats
        );
        (table, f64::from(gave_up) / f64::from(compared + gave_up))
    }

    /// Builds and checks the table of a real binary, where nearly all code has rules the
    /// kernel walk follows.
    fn check_real_binary(name: &str, data: &[u8], samples: usize) -> UnwindTable {
        let (table, fall_back) = compare_with_gimli(name, data, samples);
        assert!(fall_back < 0.02, "{name}: {fall_back} fall back");
        table
    }

    #[test]
    fn matches_gimli_on_the_test_binary() {
        let exe = read("/proc/self/exe");
        check_real_binary("test binary", &exe, 4000);
    }

    #[test]
    fn matches_gimli_on_libc() {
        check_real_binary("libc", &read(LIBC), 4000);
    }

    #[test]
    fn matches_gimli_on_a_binary_without_frame_pointers() {
        check_real_binary("python3", &read(PYTHON), 4000);
    }

    /// The largest binary at hand (Rust's compiler, BOLT-optimized, its code split into hot
    /// and cold parts).
    #[test]
    fn matches_gimli_on_librustc_driver() {
        let Some(path) = librustc_driver() else {
            println!("no librustc_driver in the stable toolchain: skipped");
            return;
        };
        check_real_binary("librustc_driver", &std::fs::read(path).unwrap(), 4000);
    }

    /// The vDSO (`clock_gettime`) is an ELF image like any library.
    #[test]
    fn matches_gimli_on_the_vdso() {
        let vdso = crate::record::unwind::own_vdso().expect("this process has a vDSO");
        check_real_binary("vdso", &vdso, 2000);
    }

    /// gcc's realigned frames (`and $-32, %rsp` in the prologue): libitm, where installed
    /// (it comes with gcc), has them.
    #[test]
    fn matches_gimli_on_realigned_frames() {
        let Ok(data) = std::fs::read("/usr/lib/x86_64-linux-gnu/libitm.so.1") else {
            println!("no libitm: skipped");
            return;
        };
        let table = check_real_binary("libitm", &data, 2000);
        assert!(
            table
                .rows
                .iter()
                .any(|r| r.rule == CFA_RBP_DEREF | RBP_AT_RBP
                    && r.cfa_offset() == 8
                    && r.rbp_offset == 0)
        );
    }

    fn librustc_driver() -> Option<PathBuf> {
        let rustup = std::env::var_os("RUSTUP_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".rustup")))?;
        let lib = rustup.join("toolchains/stable-x86_64-unknown-linux-gnu/lib");
        std::fs::read_dir(lib)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("librustc_driver-") && n.ends_with(".so"))
            })
    }

    /// Build time of the largest table in an optimized build: `cargo test --release --lib
    /// record::unwind_table -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn time_librustc_driver() {
        let path = librustc_driver().expect("librustc_driver");
        let data = std::fs::read(path).unwrap();
        for _ in 0..3 {
            let started = Instant::now();
            let table = build(&data, MAX_ROWS).unwrap();
            println!(
                "librustc_driver: {} rows, {} bytes in {:?}",
                table.rows.len(),
                table.bytes(),
                started.elapsed()
            );
        }
    }

    /// The fuzzer's seed with every rule, built with `gcc -O2 -shared -nostdlib -fPIC
    /// -Wl,-z,noseparate-code -Wl,-z,max-page-size=64 -Wl,-z,norelro -Wl,--build-id=none -s`
    /// from:
    ///
    /// ```c
    /// extern void ext(void *);
    /// void realign(int n) {  /* gcc realigns with a DRAP register (r10) */
    ///     char buf[n];
    ///     char aligned[64] __attribute__((aligned(32)));
    ///     ext(buf);
    ///     ext(aligned);
    /// }
    /// void frame(void) { ext(0); ext(0); }
    /// __asm__(".globl sig\nsig:\n.cfi_startproc\n.cfi_signal_frame\nnop\nmov $15,%rax\n"
    ///         "syscall\n.cfi_endproc\n");
    /// __asm__(".globl start\nstart:\n.cfi_startproc\n.cfi_undefined rip\nxor %ebp,%ebp\n"
    ///         "call ext@PLT\nhlt\n.cfi_endproc\n");
    /// ```
    fn seed() -> Option<Vec<u8>> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/unwind_table/seed-cfi.so"
        );
        let data = std::fs::read(path).ok();
        if data.is_none() {
            println!("{path} is missing (not a checkout): skipped");
        }
        data
    }

    /// CFA offsets beyond 16 bits: counted in bytes up to 256 KiB, in eighths up to 2 MiB.
    #[test]
    fn cfa_offsets_of_large_frames() {
        // rustc's librustc_driver has frames of 540 KiB (CFA rsp + 540080).
        for offset in [0, 8, 65535, 65536, 262143, 262144, 540080, (1 << 21) - 8] {
            let row = UnwindRow::new(0x1000, CFA_RSP | RBP_AT_CFA, offset, -2).unwrap();
            assert_eq!(row.cfa_offset(), offset);
            assert_eq!(row.rule & CFA_MASK, CFA_RSP);
            assert_eq!(row.rule & RBP_MASK, RBP_AT_CFA);
        }
        for offset in [262145, 540081, 1 << 21, u64::MAX] {
            assert_eq!(UnwindRow::new(0x1000, CFA_RSP, offset, 0), None, "{offset}");
        }
    }

    /// Row by row, as readelf --debug-dump=frames shows the seed's CFI.
    #[test]
    fn every_rule_of_a_small_library() {
        let Some(data) = seed() else { return };
        let (table, _) = compare_with_gimli("seed", &data, 1000);
        let row = |pc, rule, cfa_offset, rbp_offset| {
            UnwindRow::new(pc, rule, cfa_offset, rbp_offset).expect("the format holds it")
        };
        assert_eq!(
            table.rows,
            [
                // .plt: PLT0 pushes twice, then the stubs.
                row(0x260, CFA_RSP, 16, 0),
                row(0x266, CFA_RSP, 24, 0),
                row(0x270, CFA_PLT, 8, 11),
                row(0x280, CFA_SIGNAL, 0, 0),
                row(0x28a, CFA_END, 0, 0),
                // Padding before `realign`.
                row(0x292, CFA_NONE, 0, 0),
                row(0x2a0, CFA_RSP, 8, 0),
                // CFA = r10 (the DRAP register): beyond the format.
                row(0x2a5, CFA_NONE, 0, 0),
                row(0x2be, CFA_RBP_DEREF | RBP_AT_RBP, 8, 0),
                row(0x2da, CFA_NONE, 0, 0),
                // gcc leaves rbp's rule as it was at the `ret`.
                row(0x2df, CFA_RSP | RBP_AT_RBP, 8, 0),
                row(0x2e0, CFA_RSP, 8, 0),
                row(0x2e4, CFA_RSP, 16, 0),
                row(0x2f1, CFA_RSP, 8, 0),
                row(0x2f6, CFA_NONE, 0, 0),
            ]
        );
        assert_eq!(
            table.stats,
            BuildStats {
                fdes: 5,
                fdes_skipped: 0,
                fdes_overlapping: 0,
                rows: 15,
                unsupported_rows: 3,
                gap_rows: 2,
                truncated: false,
            }
        );
    }

    #[test]
    fn plt_stubs_get_the_plt_rule() {
        for path in [LIBC, PYTHON] {
            let data = read(path);
            let file = object::File::parse(&*data).unwrap();
            let Some(plt) = file.section_by_name(".plt") else {
                println!("{path} has no .plt: skipped");
                continue;
            };
            let table = build(&data, MAX_ROWS).unwrap();
            // The first 16 bytes (PLT0) push twice; every stub after has the PLT expression.
            let stubs = plt.address() + 16..plt.address() + plt.size();
            assert!(!stubs.is_empty(), "{path}");
            for address in stubs {
                let row = table.lookup(address).unwrap();
                assert_eq!(row.rule, CFA_PLT, "{path}: {address:#x}");
                assert_eq!(row.cfa_offset(), 8, "{path}: {address:#x}");
                assert!(matches!(row.rbp_offset, 10 | 11), "{path}: {row:?}");
            }
        }
    }

    #[test]
    fn restore_rt_is_the_signal_trampoline() {
        let data = read(LIBC);
        let table = build(&data, MAX_ROWS).unwrap();
        // glibc's __restore_rt (a local symbol: not in .dynsym) is `mov $15, %rax; syscall`
        // (rt_sigreturn).
        let code = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];
        let file = object::File::parse(&*data).unwrap();
        let text = file.section_by_name(".text").unwrap();
        let bytes = text.data().unwrap();
        let found: Vec<u64> = bytes
            .windows(code.len())
            .enumerate()
            .filter(|(_, w)| *w == code)
            .map(|(i, _)| text.address() + i as u64)
            .collect();
        assert!(!found.is_empty());
        for address in found {
            for pc in address..address + code.len() as u64 {
                assert_eq!(table.lookup(pc).unwrap().rule, CFA_SIGNAL, "{pc:#x}");
            }
        }
        assert_eq!(table.stats.fdes_skipped, 0);
    }

    /// glibc's `_start` marks its return address undefined (`.cfi_undefined rip`).
    #[test]
    fn start_is_the_outermost_frame() {
        for path in ["/proc/self/exe", PYTHON] {
            let data = read(path);
            let entry = object::File::parse(&*data).unwrap().entry();
            let table = build(&data, MAX_ROWS).unwrap();
            assert_eq!(table.lookup(entry).unwrap().rule, CFA_END, "{path}");
            // For the whole of _start: up to its `hlt`.
            let mut ctx = UnwindContext::new();
            let oracle = Oracle::new(&data);
            let end = (entry..)
                .take_while(|&a| oracle.step(&mut ctx, Regs::at(a)) == Some(Step::End))
                .last()
                .unwrap();
            assert!(end > entry, "{path}");
            for address in entry..=end {
                assert_eq!(table.lookup(address).unwrap().rule, CFA_END, "{path}");
            }
        }
    }

    #[test]
    fn recognises_the_plt_and_realigned_frame_expressions() {
        // breg7 8; breg16 0; lit15; and; lit11; ge; lit3; shl; plus
        let plt = [0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22];
        assert_eq!(cfa_expression(&plt), Some((CFA_PLT, 8, Some(11))));
        let mut lit10 = plt;
        lit10[6] = 0x3a;
        assert_eq!(cfa_expression(&lit10), Some((CFA_PLT, 8, Some(10))));
        for bad in [
            &plt[..10],
            &[&plt[..], &[0x22]].concat(),
            &[0x77, 8, 0x80, 1, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22],
            &[0x77, 8, 0x80, 0, 0x3e, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22],
            &[
                0x77, 0x78, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
            ],
            // __restore_rt's: breg7 160; deref
            &[0x77, 0xa0, 0x01, 0x06],
            &[],
            &[0x77],
        ] {
            assert_eq!(cfa_expression(bad), None, "{bad:x?}");
        }
        // breg6 -8; deref
        assert_eq!(
            cfa_expression(&[0x76, 0x78, 0x06]),
            Some((CFA_RBP_DEREF, 8, None))
        );
        assert_eq!(cfa_expression(&[0x76, 0x08, 0x06]), None);
        assert_eq!(cfa_expression(&[0x76, 0x78, 0x06, 0x06]), None);
        assert_eq!(rbp_expression(&[0x76, 0x00]), Some(0));
        assert_eq!(rbp_expression(&[0x76, 0x70]), Some(-16));
        assert_eq!(rbp_expression(&[0x77, 0x00]), None);
        assert_eq!(rbp_expression(&[0x76, 0x00, 0x06]), None);
        assert_eq!(eighths(-16), Some(-2));
        assert_eq!(eighths(-12), None);
        assert_eq!(eighths(8 * 128), None);
        assert_eq!(eighths(-8 * 128), Some(-128));
    }

    #[test]
    fn row_limit_is_exact() {
        let data = read(LS);
        let table = build(&data, MAX_ROWS).unwrap();
        let rows = table.rows.len();
        assert!(table.stats.fdes < rows);
        assert_eq!(build(&data, rows).as_ref(), Some(&table));
        assert_eq!(build(&data, rows - 1), None);
        assert_eq!(build(&data, 0), None);
    }

    #[test]
    fn not_elf_or_no_eh_frame_gives_none() {
        let data = read(LS);
        assert_eq!(build(b"", MAX_ROWS), None);
        assert_eq!(build(b"\x7fELF", MAX_ROWS), None);
        assert_eq!(build(b"not an ELF file at all", MAX_ROWS), None);
        for len in [64, 1000, data.len() / 2, data.len() - 1] {
            if let Some(table) = build(&data[..len], MAX_ROWS) {
                check_shape(&table);
            }
        }
    }

    /// The ELF64 section header of section `name`: its offset in the file.
    fn section_header(data: &[u8], name: &str) -> usize {
        let file = object::File::parse(data).unwrap();
        let index = file.section_by_name(name).unwrap().index().0;
        let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
        let shentsize = u16::from_le_bytes(data[0x3a..0x3c].try_into().unwrap()) as usize;
        shoff + index * shentsize
    }

    /// `.eh_frame`'s range in `data`, and its address.
    fn eh_frame_of(data: &[u8]) -> (std::ops::Range<usize>, u64) {
        let file = object::File::parse(data).unwrap();
        let section = file.section_by_name(".eh_frame").unwrap();
        let (offset, size) = section.file_range().unwrap();
        (offset as usize..(offset + size) as usize, section.address())
    }

    #[test]
    fn eh_frame_outside_the_file_gives_none() {
        let data = read(LS);
        let header = section_header(&data, ".eh_frame");
        let past = (data.len() as u64 + 4096).to_le_bytes();
        for field in [0x18, 0x20] {
            let mut bad = data.clone();
            bad[header + field..header + field + 8].copy_from_slice(&past);
            assert_eq!(build(&bad, MAX_ROWS), None, "field {field:#x}");
        }
        let mut bad = data.clone();
        bad[header + 0x18..header + 0x20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(build(&bad, MAX_ROWS), None);
    }

    #[test]
    fn cut_short_eh_frame_never_panics() {
        let data = read(LS);
        let header = section_header(&data, ".eh_frame");
        let (range, _) = eh_frame_of(&data);
        for size in (0..range.len()).step_by(7) {
            let mut bad = data.clone();
            bad[header + 0x20..header + 0x28].copy_from_slice(&(size as u64).to_le_bytes());
            if let Some(table) = build(&bad, MAX_ROWS) {
                check_shape(&table);
            }
        }
    }

    #[test]
    fn garbled_eh_frame_never_panics_and_stays_bounded() {
        let data = read(LS);
        let (range, _) = eh_frame_of(&data);
        let mut random = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            random
        };
        let mut tables = 0;
        for i in 0..3000 {
            let mut bad = data.clone();
            // One byte, or a burst of eight (lengths, pointers and instructions at once).
            for _ in 0..if i % 3 == 0 { 8 } else { 1 } {
                let position = range.start + (next() % range.len() as u64) as usize;
                bad[position] ^= (next() as u8) | 1;
            }
            let started = Instant::now();
            if let Some(table) = build(&bad, MAX_ROWS) {
                check_shape(&table);
                tables += 1;
            }
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        // Most damage stays within one FDE: the rest of the table survives.
        assert!(tables > 1000, "{tables}");
    }

    /// The FDEs of `data` whose addresses are pc-relative 4-byte values (what gcc and LLVM
    /// emit): (offset in .eh_frame, start, length).
    fn pcrel_fdes(data: &[u8]) -> Vec<(usize, u64, u64)> {
        let (range, svma) = eh_frame_of(data);
        let bases = BaseAddresses::default().set_eh_frame(svma);
        let mut eh_frame = EhFrame::new(&data[range], LittleEndian);
        eh_frame.set_address_size(8);
        let mut entries = eh_frame.entries(&bases);
        let mut fdes = Vec::new();
        while let Some(entry) = entries.next().unwrap() {
            if let CieOrFde::Fde(partial) = entry {
                let fde = partial.parse(EhFrame::cie_from_offset).unwrap();
                let pcrel = constants::DW_EH_PE_pcrel.0 | constants::DW_EH_PE_sdata4.0;
                if fde.cie().fde_address_encoding().map(|e| e.0) == Some(pcrel) {
                    fdes.push((partial.offset(), fde.initial_address(), fde.len()));
                }
            }
        }
        fdes
    }

    /// Moves the FDE at `offset` of .eh_frame to start at `start`.
    fn move_fde(data: &mut [u8], offset: usize, start: u64) {
        let (range, svma) = eh_frame_of(data);
        // length (4), CIE pointer (4), then the start, relative to its own address.
        let field = offset + 8;
        let relative = start.wrapping_sub(svma + field as u64) as u32;
        data[range.start + field..range.start + field + 4].copy_from_slice(&relative.to_le_bytes());
    }

    #[test]
    fn overlapping_fdes_take_the_rules_of_the_first() {
        let data = read(LS);
        let original = build(&data, MAX_ROWS).unwrap();
        let fdes = pcrel_fdes(&data);
        let &(_, a_start, a_len) = fdes.iter().find(|f| f.2 >= 64).unwrap();
        let &(b_offset, ..) = fdes.iter().rev().find(|f| f.1 != a_start).unwrap();
        let rule = |row: Option<UnwindRow>| row.map(|r| (r.rule, r.cfa_offset(), r.rbp_offset));
        // B (later in the section) moved inside A, then onto A's start: A's rules stay.
        for b_start in [a_start + 1, a_start] {
            let mut bad = data.clone();
            move_fde(&mut bad, b_offset, b_start);
            let table = build(&bad, MAX_ROWS).unwrap();
            check_shape(&table);
            assert_eq!(build(&bad, MAX_ROWS).as_ref(), Some(&table));
            assert!(table.stats.fdes_overlapping >= 1);
            for address in a_start..a_start + a_len {
                assert_eq!(
                    rule(table.lookup(address)),
                    rule(original.lookup(address)),
                    "{address:#x}"
                );
            }
        }
    }

    #[test]
    fn code_at_4_gib_and_above_gives_none() {
        let mut data = read(LS);
        let (range, _) = eh_frame_of(&data);
        let &(offset, ..) = pcrel_fdes(&data).last().unwrap();
        // As far up as a 4-byte relative start reaches, with a length to past 4 GiB.
        let field = range.start + offset + 8;
        data[field..field + 4].copy_from_slice(&0x7fff_ffff_u32.to_le_bytes());
        data[field + 4..field + 8].copy_from_slice(&0x7fff_ffff_u32.to_le_bytes());
        assert_eq!(build(&data, MAX_ROWS), None);
    }
}
