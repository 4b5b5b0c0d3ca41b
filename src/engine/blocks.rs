//! The read side of every job on an image: one thread reads a stream's records in order, every
//! core decodes and checks them and hands each block, with where it belongs on the disk, to a
//! caller's function (verify compares, restore writes at the block's place, in any order).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Result};
use crossbeam_channel::bounded;

use crate::engine::progress::cancelled;
use crate::engine::Interrupted;
use crate::image::format::{Encoding, StreamCursor};
use crate::image::reader::{decode_block, BlockStream, LoadedStream};

/// A decoded block and where its bytes go.
pub struct Decoded<'a> {
    /// Block number.
    pub block: u64,
    /// Was it stored as a hole (all zero)?
    pub zero: bool,
    /// The bytes (all zero for a hole).
    pub data: &'a [u8],
    /// (disk offset, offset in `data`, length) pieces.
    pub pieces: &'a [(u64, u64, u64)],
}

/// Runs `f` on every block of `stream`, decoded and CRC-checked, on `threads` workers.
/// The first error stops everything and is returned.
pub fn for_each_block<F>(
    dir: &std::path::Path,
    stream: &LoadedStream,
    threads: usize,
    f: F,
) -> Result<()>
where
    F: Fn(Decoded<'_>) -> Result<()> + Sync,
{
    let threads = threads.max(1);
    let (tx, rx) = bounded(threads * 2);
    let abort = AtomicBool::new(false);
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let fail = |e: anyhow::Error| {
        abort.store(true, Ordering::Relaxed);
        let mut slot = first_err.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    };
    // The reader runs ahead of the workers: when it finds a volume's checksum wrong, the blocks
    // already sent are still checked, so a bad block is named rather than only its volume.
    let reader_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        let abort = &abort;
        let fail = &fail;
        let reader_err = &reader_err;
        s.spawn(move || {
            let mut reader = BlockStream::new(dir, stream);
            let mut cursor = StreamCursor::new(&stream.map);
            let mut pieces = Vec::new();
            let base = stream.info.base;
            loop {
                if abort.load(Ordering::Relaxed) {
                    return;
                }
                if cancelled() {
                    fail(anyhow!(Interrupted));
                    return;
                }
                match reader.next_block() {
                    Ok(Some(raw)) => {
                        cursor.take(u64::from(raw.entry.len), &mut pieces);
                        let mut at = 0u64;
                        let placed: Vec<(u64, u64, u64)> = pieces
                            .iter()
                            .map(|&(off, n)| {
                                let p = (base + off, at, n);
                                at += n;
                                p
                            })
                            .collect();
                        if tx.send((raw, placed)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        *reader_err.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.into());
                        return;
                    }
                }
            }
        });
        for _ in 0..threads {
            let rx = rx.clone();
            let f = &f;
            s.spawn(move || {
                let mut buf = Vec::new();
                for (raw, pieces) in rx.iter() {
                    if abort.load(Ordering::Relaxed) {
                        return;
                    }
                    let r = decode_block(&stream.info, &raw, &mut buf)
                        .map_err(|e| {
                            let from = pieces.first().map(|p| p.0).unwrap_or(0);
                            let to = pieces.last().map(|p| p.0 + p.2).unwrap_or(0);
                            anyhow::Error::from(e)
                                .context(format!("the block holds disk bytes {from:#x}..{to:#x}"))
                        })
                        .and_then(|()| {
                            f(Decoded {
                                block: raw.block,
                                zero: raw.entry.encoding == Encoding::Zero,
                                data: &buf,
                                pieces: &pieces,
                            })
                        });
                    if let Err(e) = r {
                        fail(e);
                        return;
                    }
                }
            });
        }
        drop(rx);
    });
    let worker = first_err.into_inner().unwrap_or_else(|p| p.into_inner());
    let reader = reader_err.into_inner().unwrap_or_else(|p| p.into_inner());
    match worker.or(reader) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
