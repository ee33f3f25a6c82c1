package engine

import (
	"errors"
	"io"
	"os"
	"sync"
)

// spool is an ordered byte queue between one producer and one consumer: it
// keeps up to memLimit unread bytes in memory while the process's held
// budget allows, and spills the rest to a temporary file, up to spillLimit
// unread bytes there, beyond which the producer waits for the consumer. It
// lets a worker hand over a response as fast as it produces it while a
// slow client reads it at its own pace, with bounded memory and bounded
// disk: an app streaming without end to a client that does not read would
// otherwise fill the temporary directory.
//
// The memory counts in the held budget from the Write that takes it until
// the consumer is done with it (the chunk Next hands out counts until the
// next call: the client's write may hold it). Past the budget a spool goes
// to its file at once instead of waiting, so no worker waits on another
// client's budget: an HTTP/2 client that opened hundreds of streams to a
// large page and read none made Caddy keep a megabyte of memory for each.
type spool struct {
	mu         sync.Mutex
	wake       chan struct{} // signalled when data arrives or the producer ends
	room       chan struct{} // signalled when the consumer reads from the file or leaves
	memLimit   int
	spillLimit int64

	mem      [][]byte // unread in-memory chunks, oldest first
	memBytes int
	lent     int // bytes of the in-memory chunk Next handed out last, still counted

	file         *os.File // spill file; once used, new data goes there until drained
	fileR, fileW int64
	closed       bool  // producer is done
	err          error // producer's error, reported after the data
	discard      bool  // consumer is gone: drop everything
	readBuf      []byte
	readBufHeld  int // what readBuf counts in the held budget
}

func newSpool(memLimit int, spillLimit int64) *spool {
	return &spool{wake: make(chan struct{}, 1), room: make(chan struct{}, 1), memLimit: memLimit, spillLimit: spillLimit}
}

func (s *spool) signal() { wakeUp(s.wake) }

// wakeUp wakes whoever waits on ch, if anyone does or will.
func wakeUp(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Write appends a copy of p. It waits for the consumer only while the
// spill file holds spillLimit unread bytes.
func (s *spool) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.discard && s.file != nil && s.fileW > s.fileR && s.fileW-s.fileR+int64(len(p)) > s.spillLimit {
		s.mu.Unlock()
		<-s.room
		s.mu.Lock()
	}
	if s.discard {
		return len(p), nil
	}
	fits := s.file == nil && s.memBytes+len(p) <= s.memLimit
	if fits && held.takeMem(len(p)) {
		s.keepLocked(p)
		return len(p), nil
	}
	if s.file == nil {
		f, err := os.CreateTemp("", "hearth-response-*")
		if err != nil && fits {
			// no file to be had (an unwritable or full temporary
			// directory, no descriptor left): memory, past the budget,
			// rather than a response cut off or a worker held; each
			// response's own bound still holds
			held.mem.Add(int64(len(p)))
			s.keepLocked(p)
			return len(p), nil
		}
		if err != nil {
			return 0, err
		}
		_ = os.Remove(f.Name()) // unlinked: gone when closed, whatever happens
		s.file = f
	}
	if _, err := s.file.WriteAt(p, s.fileW); err != nil {
		return 0, err
	}
	s.fileW += int64(len(p))
	s.signal()
	return len(p), nil
}

// keepLocked keeps a copy of p in memory, counted in the held budget.
func (s *spool) keepLocked(p []byte) {
	s.mem = append(s.mem, append([]byte(nil), p...))
	s.memBytes += len(p)
	s.signal()
}

// CloseWithError ends the stream; err (may be nil) is reported to the
// consumer after the data written so far.
func (s *spool) CloseWithError(err error) {
	s.mu.Lock()
	s.closed, s.err = true, err
	s.mu.Unlock()
	s.signal()
}

// Next returns the next unread chunk, blocking until one is available.
// more reports whether more data is already buffered (so the caller can
// delay flushing). It returns io.EOF at the end, or the producer's error.
func (s *spool) Next() (chunk []byte, more bool, err error) {
	s.mu.Lock()
	s.giveBackLentLocked()
	s.mu.Unlock()
	for {
		s.mu.Lock()
		if len(s.mem) > 0 {
			chunk = s.mem[0]
			s.mem[0] = nil
			s.mem = s.mem[1:]
			s.memBytes -= len(chunk)
			s.lent = len(chunk)
			more = len(s.mem) > 0 || s.fileR < s.fileW
			s.mu.Unlock()
			return chunk, more, nil
		}
		if s.fileR < s.fileW {
			chunk, err = s.readFileLocked()
			more = s.fileR < s.fileW
			s.mu.Unlock()
			wakeUp(s.room)
			return chunk, more, err
		}
		if s.closed {
			err = s.err
			s.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return nil, false, err
		}
		s.mu.Unlock()
		<-s.wake
	}
}

// giveBackLentLocked gives back the budget of the chunk Next handed out
// last: the consumer is done with it.
func (s *spool) giveBackLentLocked() {
	held.giveMem(s.lent)
	s.lent = 0
}

// spillReadSize is the buffer a spool reads its file into while the held
// budget allows; past it, spillReadMin (a stalled client's write holds the
// buffer, one per response: the floor each costs, as the 4 KiB Go's
// HTTP/2 server keeps for each response's writes).
const (
	spillReadSize = 64 << 10
	spillReadMin  = 4 << 10
)

func (s *spool) readFileLocked() ([]byte, error) {
	if s.readBuf == nil {
		if held.takeMem(spillReadSize) {
			s.readBuf, s.readBufHeld = make([]byte, spillReadSize), spillReadSize
		} else {
			s.readBuf = make([]byte, spillReadMin)
		}
	}
	n := int64(len(s.readBuf))
	if left := s.fileW - s.fileR; left < n {
		n = left
	}
	read, err := s.file.ReadAt(s.readBuf[:n], s.fileR)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	s.fileR += int64(read)
	if s.fileR == s.fileW {
		// caught up: reuse the file from its start
		s.fileR, s.fileW = 0, 0
		if len(s.mem) == 0 {
			s.file.Close()
			s.file = nil
		}
	}
	return s.readBuf[:read], nil // valid until the next call, like every chunk
}

// Discard is called by a consumer that stops reading (the client went
// away): buffered and future data is dropped.
func (s *spool) Discard() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.discard = true
	s.mem = nil
	s.release()
	wakeUp(s.room)
}

// release frees the spill file and gives back the memory the spool holds.
func (s *spool) release() {
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
	s.fileR, s.fileW = 0, 0
	held.giveMem(s.memBytes + s.readBufHeld)
	s.memBytes, s.readBuf, s.readBufHeld = 0, nil, 0
	s.giveBackLentLocked()
}

// Close frees resources once the consumer is done.
func (s *spool) Close() {
	s.mu.Lock()
	s.release()
	s.mu.Unlock()
}
