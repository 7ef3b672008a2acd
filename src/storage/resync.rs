//! The resynchronisation scan over a segment file (spec 5.1, rule 3): the
//! largest `durable_end` of any frame header past an incomplete frame, read
//! from the file itself in bounded pieces. Recovery, `check` and readers all
//! use this one scan; the per-piece decoder is
//! [`crate::format::frame::resync_max_durable_in`].

use crate::format::frame::resync_max_durable_in;
use crate::format::{FRAME_HEADER_LEN, FRAME_HEADER_V3_LEN, Layout};

use crate::format::ALIGN;

/// Bytes read at a time by [`resync_file`].
pub(crate) const RESYNC_CHUNK: u64 = 1 << 20;

/// [`resync_max_durable`] over the bytes `[from, len)` of the file itself:
/// the scan of recovery, `check` and readers past an incomplete frame (spec
/// 5.1, rule 3). The file is copied in pieces of [`RESYNC_CHUNK`] bytes (plus
/// a header's overlap), so memory is bounded whatever its length, and on
/// Linux the holes of a sparse file are skipped where the file system says
/// where they are (`SEEK_DATA`): a hole reads as zeros, which hold no frame
/// header. Bytes are copied, never mapped: the file may be the active
/// segment of a running writer (spec 7). A file cut while it is scanned ends
/// the scan there.
pub(crate) fn resync_file(
    file: &std::fs::File,
    path: &std::path::Path,
    from: u64,
    len: u64,
    layout: &Layout,
) -> crate::Result<u64> {
    // The shortest frame header of the layout (version 3: 32 bytes).
    let hdr = if layout.compact() {
        FRAME_HEADER_V3_LEN
    } else {
        FRAME_HEADER_LEN
    } as u64;
    let mut best = 0;
    let Some(mut at) = from.checked_next_multiple_of(ALIGN) else {
        return Ok(0);
    };
    let mut chunk = Vec::new();
    while at < len && len - at >= hdr {
        #[cfg(target_os = "linux")]
        match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(at)) {
            // Data starts later: [at, d) is a hole.
            Ok(d) if d > at => at = d & !(ALIGN - 1),
            Ok(_) => {}
            // ENXIO: nothing but a hole past `at`.
            Err(rustix::io::Errno::NXIO) => break,
            // The file system cannot say: read on.
            Err(_) => {}
        }
        if at >= len || len - at < hdr {
            break;
        }
        // At most RESYNC_CHUNK + 72 bytes (a header with its chain slot
        // starting in the piece lies wholly in it).
        let n = (len - at).min(RESYNC_CHUNK + FRAME_HEADER_LEN as u64);
        chunk.resize(n as usize, 0);
        match crate::storage::io::read_exact_at(file, &mut chunk, at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(crate::Error::io("read", path, e)),
        }
        best = best.max(resync_max_durable_in(
            &chunk,
            at,
            from,
            at.saturating_add(RESYNC_CHUNK),
            layout,
        ));
        at = at.saturating_add(RESYNC_CHUNK);
    }
    Ok(best)
}
