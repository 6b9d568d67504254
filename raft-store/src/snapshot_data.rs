//! The snapshot data openraft moves ([`SnapshotData`], the type configuration's): a window of
//! a file, read from disk in chunks as it is sent to a lagging peer and written to disk as it is
//! received from the leader, never the whole data in memory.
//!
//! openraft 0.9 only reads the data it is handed with `seek` and `read` (to send it in chunks,
//! of [`snapshot_max_chunk_size`](openraft::Config::snapshot_max_chunk_size)) and writes what
//! it receives with `seek` and `write` (to hand it to
//! [`install_snapshot`](openraft::storage::RaftStateMachine::install_snapshot)). A snapshot
//! file holds the data between its metadata and its checksum ([`crate::snapshot`]): the window
//! makes that range look like a whole file, position 0 at its first byte, end at its last.

use std::io::{self, SeekFrom};
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncWrite, ReadBuf, Take};

/// A snapshot's data as openraft holds it: a window of a file (see the module).
pub struct SnapshotData {
    /// The file, with what is left to read of the window as its limit: a read never goes past
    /// the window's end (into the snapshot file's checksum). Kept equal to `end - position`
    /// by every seek.
    file: Take<tokio::fs::File>,
    /// Where the window starts in the file: position 0 of the data.
    start: u64,
    /// Where the window ends in the file (exclusive), or `None` for data being received, which
    /// ends where the file does.
    end: Option<u64>,
    /// A seek was started and not yet completed: its completion sets the read limit.
    seeking: bool,
}

impl SnapshotData {
    /// The bytes `window` of `file`, ready to be read from the window's start. Blocking (the
    /// file is positioned before it is handed to tokio).
    pub(crate) fn window(mut file: std::fs::File, window: Range<u64>) -> io::Result<Self> {
        use std::io::Seek;
        debug_assert!(window.start <= window.end);
        file.seek(SeekFrom::Start(window.start))?;
        Ok(Self {
            file: tokio::fs::File::from_std(file).take(window.end - window.start),
            start: window.start,
            end: Some(window.end),
            seeking: false,
        })
    }

    /// An empty file to receive data into (its window is the whole file).
    pub(crate) fn receiving(file: std::fs::File) -> Self {
        Self {
            file: tokio::fs::File::from_std(file).take(u64::MAX),
            start: 0,
            end: None,
            seeking: false,
        }
    }

    /// The file and where the data is in it (to the file's end for data received), once every
    /// write to it has completed (openraft shuts the data down before it is installed; a write
    /// still in flight is waited for here too). The data to install is usually what was
    /// received, but any `SnapshotData` will do: openraft's storage suite installs a window of
    /// another state machine's snapshot file.
    pub(crate) async fn into_file(mut self) -> io::Result<(std::fs::File, u64, Option<u64>)> {
        use tokio::io::AsyncWriteExt;
        self.file.get_mut().flush().await?;
        let file = self.file.into_inner().into_std().await;
        Ok((file, self.start, self.end))
    }

    /// How many bytes the data is: the window's length (`None` for data being received, whose
    /// length is the file's).
    pub fn data_len(&self) -> Option<u64> {
        self.end.map(|end| end - self.start)
    }

    /// The underlying file, for a write or a seek (the read limit is not involved).
    fn inner(&mut self) -> Pin<&mut tokio::fs::File> {
        Pin::new(self.file.get_mut())
    }
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotData")
            .field("start", &self.start)
            .field("end", &self.end)
            .finish()
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotData {
    /// Data received only: a window of a snapshot file is never written (the file is the
    /// node's snapshot).
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.end.is_some() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a snapshot file's data is not written to",
            )));
        }
        self.inner().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner().poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotData {
    /// Positions are the window's: `Start(p)` is `p` bytes into the data, `End(o)` is `o` bytes
    /// from its end. A window is never left: a position before its start or past its end is
    /// `InvalidInput`, and the file stays where it was (so its position is always the window's
    /// end less the read limit). Data being received seeks as its file does.
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let in_file = match self.end {
            Some(end) => {
                let at = end - self.file.limit();
                let target = match position {
                    SeekFrom::Start(p) => self.start.checked_add(p),
                    SeekFrom::End(o) => end.checked_add_signed(o),
                    SeekFrom::Current(o) => at.checked_add_signed(o),
                };
                let target = target
                    .filter(|t| (self.start..=end).contains(t))
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidInput, "a seek outside the snapshot")
                    })?;
                SeekFrom::Start(target)
            }
            None => position,
        };
        self.inner().start_seek(in_file)?;
        self.seeking = true;
        Ok(())
    }

    /// After a seek: its position in the window, and the read limit set from it. Without one
    /// (tokio polls this before each seek, to finish any earlier one): whatever tokio's file
    /// answers, which is where its last seek went, not checked against the window.
    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let in_file = ready!(self.inner().poll_complete(cx));
        let seeking = std::mem::take(&mut self.seeking);
        let in_file = in_file?;
        if !seeking {
            return Poll::Ready(Ok(in_file.saturating_sub(self.start)));
        }
        let Some(position) = in_file.checked_sub(self.start) else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a seek before the snapshot's start",
            )));
        };
        let left = self.end.map_or(u64::MAX, |end| end.saturating_sub(in_file));
        self.file.set_limit(left);
        Poll::Ready(Ok(position))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::*;

    fn runtime() -> io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }

    /// openraft's sender: the end, then each chunk from its offset; the window's bytes and
    /// nothing around them.
    #[test]
    fn a_window_reads_as_a_whole_file() -> io::Result<()> {
        let mut file = tempfile::tempfile()?;
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&bytes)?;
        runtime()?.block_on(async {
            let mut data = SnapshotData::window(file, 1_000..9_000)?;
            assert_eq!(data.seek(SeekFrom::End(0)).await?, 8_000);
            let mut chunks = Vec::new();
            let mut offset = 0;
            loop {
                assert_eq!(data.seek(SeekFrom::Start(offset)).await?, offset);
                let mut chunk = Vec::with_capacity(3_000);
                while chunk.capacity() > chunk.len() {
                    if data.read_buf(&mut chunk).await? == 0 {
                        break;
                    }
                }
                offset += chunk.len() as u64;
                let done = chunk.len() < 3_000;
                chunks.extend(chunk);
                if done {
                    break;
                }
            }
            assert_eq!(chunks, bytes[1_000..9_000]);
            // Read again from the middle, as a retried chunk is.
            data.seek(SeekFrom::Start(7_990)).await?;
            let mut tail = Vec::new();
            data.read_to_end(&mut tail).await?;
            assert_eq!(tail, bytes[8_990..9_000]);
            assert_eq!(data.seek(SeekFrom::End(-8_000)).await?, 0);
            assert!(data.seek(SeekFrom::End(-8_001)).await.is_err());
            assert!(data.seek(SeekFrom::End(1)).await.is_err());
            assert!(data.seek(SeekFrom::Start(8_001)).await.is_err());
            // A refused seek leaves the position: relative seeks and reads go on from it.
            assert_eq!(data.seek(SeekFrom::Current(100)).await?, 100);
            assert!(data.seek(SeekFrom::Current(-101)).await.is_err());
            let mut two = [0; 2];
            data.read_exact(&mut two).await?;
            assert_eq!(two, bytes[1_100..1_102]);
            assert_eq!(data.seek(SeekFrom::Current(0)).await?, 102);
            // The window is the node's snapshot: never written to.
            assert!(data.write_all(b"x").await.is_err());
            Ok(())
        })
    }

    /// openraft's receiver: chunks written at their offsets (one sent again), then shut down;
    /// the file holds them in order.
    #[test]
    fn received_chunks_land_in_the_file() -> io::Result<()> {
        runtime()?.block_on(async {
            let mut data = SnapshotData::receiving(tempfile::tempfile()?);
            data.write_all(b"first ").await?;
            data.write_all(b"secXXX").await?;
            data.seek(SeekFrom::Start(6)).await?;
            data.write_all(b"second").await?;
            data.shutdown().await?;
            let (mut file, start, end) = data.into_file().await?;
            assert_eq!((start, end), (0, None));
            use std::io::{Read, Seek};
            file.seek(SeekFrom::Start(0))?;
            let mut back = String::new();
            file.read_to_string(&mut back)?;
            assert_eq!(back, "first second");
            Ok(())
        })
    }
}
