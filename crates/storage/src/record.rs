//! The on-disk formats: segment headers, log records and snapshot files.
//!
//! A segment file is a 24-byte header followed by records:
//!
//! ```text
//! segment header: magic "concwal1" | format version: u32 | segment sequence: u64 | crc32c: u32
//! record header:  payload length: u32 | payload crc32c: u32 | kind: u8 | 3 zero bytes
//!                 | index: u64 | term: u64 | header crc32c: u32 (over the 28 bytes before it)
//! payload:        `payload length` bytes (postcard, or nothing)
//! ```
//!
//! All integers are little-endian. The header checksum covers the payload checksum, so one valid
//! header check plus one payload check covers every byte of a record, and a corrupted length is
//! caught before it is trusted. Kind 0 does not exist, so zero-filled space never parses.
//!
//! A snapshot file is a 28-byte header and `postcard(Snapshot)`:
//!
//! ```text
//! magic "concsnp1" | format version: u32 | payload length: u64 | payload crc32c: u32 | header crc32c: u32
//! ```

use std::ops::Range;

/// Bytes of a segment header.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 24;
/// Bytes of a record header.
pub(crate) const RECORD_HEADER_BYTES: usize = 32;
/// Bytes of a snapshot file header.
pub(crate) const SNAPSHOT_HEADER_BYTES: usize = 28;

const SEGMENT_MAGIC: &[u8; 8] = b"concwal1";
const SNAPSHOT_MAGIC: &[u8; 8] = b"concsnp1";
/// The only format version this build reads and writes. 2: log entries' client sessions carry their
/// acknowledgement, and replica snapshots the session table's. 3: replica snapshots carry each
/// client's last activity (session expiry).
const FORMAT_VERSION: u32 = 3;

/// The last payload byte of every commit record. A commit record therefore never ends in a zero
/// byte, so a zero-filled tail can never be mistaken for the end of a complete, valid commit (see
/// the torn-tail rule in `wal.rs`).
pub(crate) const COMMIT_TRAILER: u8 = 0xC5;

/// What a record means. Kind 0 is reserved so zero-filled space never parses as a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// A log entry: `index`, `term`, payload `postcard(Entry)`.
    Entry = 1,
    /// Drop log entries at and after `index`.
    Truncate = 2,
    /// A snapshot became current: `index`/`term` are its last index and term, payload
    /// `postcard(SnapshotMarker)`.
    Snapshot = 3,
    /// Payload `postcard(HardState)`.
    HardState = 4,
    /// Payload `postcard((key, value))`.
    RecordPut = 5,
    /// Payload `postcard(key)`.
    RecordDelete = 6,
    /// First record of every segment: the state that the segments before it held, so they can
    /// be deleted. `index` is the log's last index; payload `postcard(Checkpoint)`.
    Checkpoint = 7,
    /// Ends a group (one `persist` call): `index` is the group's sequence number, `term` the
    /// number of records in the group before this one. Records after the last commit are an
    /// unacknowledged, interrupted write.
    Commit = 8,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<RecordKind> {
        Some(match byte {
            1 => RecordKind::Entry,
            2 => RecordKind::Truncate,
            3 => RecordKind::Snapshot,
            4 => RecordKind::HardState,
            5 => RecordKind::RecordPut,
            6 => RecordKind::RecordDelete,
            7 => RecordKind::Checkpoint,
            8 => RecordKind::Commit,
            _ => return None,
        })
    }
}

/// Appends a segment header.
pub(crate) fn encode_segment_header(buffer: &mut Vec<u8>, sequence: u64) {
    let start = buffer.len();
    buffer.extend_from_slice(SEGMENT_MAGIC);
    buffer.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    buffer.extend_from_slice(&sequence.to_le_bytes());
    let crc = crc32c::crc32c(&buffer[start..]);
    buffer.extend_from_slice(&crc.to_le_bytes());
}

/// Reads a segment header, returning the segment sequence it names.
pub(crate) fn decode_segment_header(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(format!(
            "segment header needs {SEGMENT_HEADER_BYTES} bytes, the file has {}",
            bytes.len()
        ));
    }
    if &bytes[0..8] != SEGMENT_MAGIC {
        return Err("not a concord write-ahead log segment (bad magic)".into());
    }
    let crc = read_u32(bytes, 20);
    if crc32c::crc32c(&bytes[0..20]) != crc {
        return Err("segment header checksum mismatch".into());
    }
    let version = read_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(format!("segment format version {version}, this build reads {FORMAT_VERSION}"));
    }
    Ok(read_u64(bytes, 12))
}

/// Appends a record whose payload `write_payload` appends to the buffer (so entries are encoded
/// in place, without an intermediate allocation). Returns the record's byte range.
pub(crate) fn encode_record<E>(
    buffer: &mut Vec<u8>,
    kind: RecordKind,
    index: u64,
    term: u64,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<Range<usize>, E> {
    let start = buffer.len();
    buffer.resize(start + RECORD_HEADER_BYTES, 0);
    write_payload(buffer)?;
    let payload_length = buffer.len() - start - RECORD_HEADER_BYTES;
    // Callers check the record size limit before encoding; the format cannot express more.
    assert!(u32::try_from(payload_length).is_ok(), "record payload of {payload_length} bytes");
    let payload_crc = crc32c::crc32c(&buffer[start + RECORD_HEADER_BYTES..]);
    let header = &mut buffer[start..start + RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&(payload_length as u32).to_le_bytes());
    header[4..8].copy_from_slice(&payload_crc.to_le_bytes());
    header[8] = kind as u8;
    header[12..20].copy_from_slice(&index.to_le_bytes());
    header[20..28].copy_from_slice(&term.to_le_bytes());
    let header_crc = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&header_crc.to_le_bytes());
    Ok(start..buffer.len())
}

/// Appends a record with a ready payload.
pub(crate) fn encode_record_bytes(
    buffer: &mut Vec<u8>,
    kind: RecordKind,
    index: u64,
    term: u64,
    payload: &[u8],
) -> Range<usize> {
    let result: Result<_, std::convert::Infallible> = encode_record(buffer, kind, index, term, |buffer| {
        buffer.extend_from_slice(payload);
        Ok(())
    });
    match result {
        Ok(range) => range,
        Err(never) => match never {},
    }
}

/// A record that parsed and whose checksums hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecordView {
    pub(crate) kind: RecordKind,
    pub(crate) index: u64,
    pub(crate) term: u64,
    /// Where the payload is, relative to the slice that was parsed.
    pub(crate) payload: Range<usize>,
    /// Where the next record starts.
    pub(crate) end: usize,
}

/// The outcome of parsing one record at an offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A valid record.
    Record(RecordView),
    /// The offset is the end of the data.
    End,
    /// The record is cut off by the end of the data: fewer bytes than a header, or a valid
    /// header whose payload runs past the end.
    CutOff {
        /// Where the record would end (the header's end if the header itself is cut off).
        claimed_end: usize,
    },
    /// The bytes are not a valid record.
    Invalid {
        /// Where the bad record ends, as far as it can be told (the header's end when the header
        /// is bad).
        claimed_end: usize,
        /// Why.
        reason: String,
    },
}

/// Parses the record at `offset` of `bytes`. Never panics, whatever the bytes.
pub(crate) fn parse_record(bytes: &[u8], offset: usize, record_bytes_max: u32) -> Parsed {
    let remaining = bytes.len().saturating_sub(offset);
    if remaining == 0 {
        return Parsed::End;
    }
    let header_end = offset + RECORD_HEADER_BYTES;
    if remaining < RECORD_HEADER_BYTES {
        return Parsed::CutOff { claimed_end: header_end };
    }
    let header = &bytes[offset..header_end];
    if crc32c::crc32c(&header[0..28]) != read_u32(header, 28) {
        return Parsed::Invalid { claimed_end: header_end, reason: "record header checksum mismatch".into() };
    }
    let Some(kind) = RecordKind::from_byte(header[8]) else {
        return Parsed::Invalid {
            claimed_end: header_end,
            reason: format!("unknown record kind {}", header[8]),
        };
    };
    if header[9..12] != [0, 0, 0] {
        return Parsed::Invalid {
            claimed_end: header_end,
            reason: "reserved header bytes are not zero".into(),
        };
    }
    let payload_length = read_u32(header, 0);
    if payload_length > record_bytes_max {
        return Parsed::Invalid {
            claimed_end: header_end,
            reason: format!("record of {payload_length} bytes exceeds record_bytes_max {record_bytes_max}"),
        };
    }
    let end = header_end + payload_length as usize;
    if end > bytes.len() {
        return Parsed::CutOff { claimed_end: end };
    }
    if crc32c::crc32c(&bytes[header_end..end]) != read_u32(header, 4) {
        return Parsed::Invalid { claimed_end: end, reason: "record payload checksum mismatch".into() };
    }
    Parsed::Record(RecordView {
        kind,
        index: read_u64(header, 12),
        term: read_u64(header, 20),
        payload: header_end..end,
        end,
    })
}

/// Parses the record at `offset` of bytes that [`parse_record`] has already accepted there (as
/// `open` does for every record before `recover` decodes them): the header's fields only, without
/// checking the checksums and limits a second time. Bytes that do not hold a whole record there
/// are `Invalid`, never a panic.
pub(crate) fn parse_checked_record(bytes: &[u8], offset: usize) -> Parsed {
    let header_end = offset.saturating_add(RECORD_HEADER_BYTES);
    let Some(header) = bytes.get(offset..header_end) else {
        return Parsed::Invalid {
            claimed_end: header_end,
            reason: "record header past the segment's end".into(),
        };
    };
    let Some(kind) = RecordKind::from_byte(header[8]) else {
        return Parsed::Invalid {
            claimed_end: header_end,
            reason: format!("unknown record kind {}", header[8]),
        };
    };
    let end = header_end.saturating_add(read_u32(header, 0) as usize);
    if end > bytes.len() {
        return Parsed::Invalid { claimed_end: end, reason: "record past the segment's end".into() };
    }
    Parsed::Record(RecordView {
        kind,
        index: read_u64(header, 12),
        term: read_u64(header, 20),
        payload: header_end..end,
        end,
    })
}

/// Appends a whole snapshot file (header and payload).
pub(crate) fn encode_snapshot_file(payload: &[u8]) -> Vec<u8> {
    let mut file = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + payload.len());
    file.extend_from_slice(SNAPSHOT_MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    file.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let header_crc = crc32c::crc32c(&file[0..24]);
    file.extend_from_slice(&header_crc.to_le_bytes());
    file.extend_from_slice(payload);
    file
}

/// Checks a snapshot file and returns its payload. `Err((offset, reason))` on any damage.
pub(crate) fn decode_snapshot_file(bytes: &[u8], snapshot_bytes_max: u64) -> Result<&[u8], (u64, String)> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err((
            0,
            format!("snapshot header needs {SNAPSHOT_HEADER_BYTES} bytes, the file has {}", bytes.len()),
        ));
    }
    if &bytes[0..8] != SNAPSHOT_MAGIC {
        return Err((0, "not a concord snapshot file (bad magic)".into()));
    }
    if crc32c::crc32c(&bytes[0..24]) != read_u32(bytes, 24) {
        return Err((0, "snapshot header checksum mismatch".into()));
    }
    let version = read_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err((0, format!("snapshot format version {version}, this build reads {FORMAT_VERSION}")));
    }
    let length = read_u64(bytes, 12);
    if length > snapshot_bytes_max {
        return Err((
            0,
            format!("snapshot of {length} bytes exceeds snapshot_bytes_max {snapshot_bytes_max}"),
        ));
    }
    let available = (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64;
    if length != available {
        return Err((
            SNAPSHOT_HEADER_BYTES as u64,
            format!("snapshot header says {length} bytes, the file holds {available}"),
        ));
    }
    let payload = &bytes[SNAPSHOT_HEADER_BYTES..];
    if crc32c::crc32c(payload) != read_u32(bytes, 20) {
        return Err((SNAPSHOT_HEADER_BYTES as u64, "snapshot payload checksum mismatch".into()));
    }
    Ok(payload)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_every_single_byte_change_is_caught() {
        let mut buffer = Vec::new();
        encode_segment_header(&mut buffer, 7);
        let range = encode_record_bytes(&mut buffer, RecordKind::Entry, 42, 3, b"hello payload");
        let Parsed::Record(view) = parse_record(&buffer, range.start, 1 << 20) else {
            panic!("a fresh record must parse");
        };
        assert_eq!((view.kind, view.index, view.term), (RecordKind::Entry, 42, 3));
        assert_eq!(&buffer[view.payload.clone()], b"hello payload");
        assert_eq!(view.end, buffer.len());
        assert_eq!(parse_record(&buffer, view.end, 1 << 20), Parsed::End);
        assert_eq!(decode_segment_header(&buffer), Ok(7));
        for position in range.clone() {
            let mut damaged = buffer.clone();
            damaged[position] ^= 0x10;
            assert!(
                !matches!(parse_record(&damaged, range.start, 1 << 20), Parsed::Record(_)),
                "a flip at byte {position} went unnoticed"
            );
        }
    }

    #[test]
    fn cut_off_and_zeroed_records_do_not_parse() {
        let mut buffer = Vec::new();
        encode_record_bytes(&mut buffer, RecordKind::Commit, 1, 0, &[COMMIT_TRAILER]);
        for length in 1..buffer.len() {
            assert!(matches!(parse_record(&buffer[..length], 0, 1 << 20), Parsed::CutOff { .. }));
        }
        let zeros = vec![0u8; 64];
        assert!(matches!(parse_record(&zeros, 0, 1 << 20), Parsed::Invalid { .. }));
        assert!(decode_segment_header(&zeros).is_err());
    }

    #[test]
    fn oversized_records_are_refused_before_reading_the_payload() {
        let mut buffer = Vec::new();
        encode_record_bytes(&mut buffer, RecordKind::Entry, 1, 1, &[7u8; 100]);
        assert!(matches!(parse_record(&buffer, 0, 99), Parsed::Invalid { .. }));
    }

    #[test]
    fn snapshot_files_check_length_and_checksum() {
        let file = encode_snapshot_file(b"state");
        assert_eq!(decode_snapshot_file(&file, 1024), Ok(&b"state"[..]));
        assert!(decode_snapshot_file(&file[..file.len() - 1], 1024).is_err());
        assert!(decode_snapshot_file(&file, 2).is_err());
        let mut flipped = file.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode_snapshot_file(&flipped, 1024).is_err());
        assert!(decode_snapshot_file(&vec![0u8; file.len()], 1024).is_err());
    }
}
