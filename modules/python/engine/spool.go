package engine

import (
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// spool is an ordered byte queue between one producer and one consumer: it
// keeps unread bytes in memory (up to memLimit) while the process's held
// budget allows, then in a temporary file (up to spillLimit unread bytes)
// while the budget's disk part allows. It lets a worker hand over a
// response as fast as it produces it while a slow client reads it at its
// own pace, with memory and disk bounded per response and in sum.
//
// What it holds counts in the held budget from the write that takes it
// until the consumer is done with it (the chunk Next hands out counts
// until the next call: the client's write may hold it; a file's bytes
// until their blocks are given back to the file system, 64 KiB at a time
// as they are read, or the file is closed). Past the budget, or past spillLimit, the producer waits for its
// consumer, as through a proxy that does not buffer: with its own unread
// bytes it waits for the consumer to read some; with none, it hands the
// chunk over in memory and waits for the consumer to take it. A producer
// that waits holds its worker; the pause hook lifts the worker's deadline
// meanwhile (a worker waiting on a slow client is not hung). An HTTP/2
// client that opened hundreds of streams to a large page and read none
// made Caddy keep a megabyte of memory for each, or the page in a file
// for each, without bound in sum.
type spool struct {
	mu         sync.Mutex
	wake       chan struct{} // signalled when data arrives or the producer ends
	room       chan struct{} // signalled when the consumer takes data or leaves
	memLimit   int
	spillLimit int64
	// pause, when set, is called before the producer waits for room
	// (counted: for the held budget, not for the spool's own bound); the
	// function it returns, once the wait is over (an error ends the wait
	// and the write)
	pause func(counted bool) (resume func() error)

	mem     [][]byte // unread in-memory chunks, oldest first
	memHeld int      // what they count in the held budget: their capacity
	lent    int      // what the in-memory chunk Next handed out last counts, still counted

	file         *os.File // spill file; once used, new data goes there until drained
	fileR, fileW int64
	punched      int64 // the file's blocks before this offset are given back
	noPunch      bool  // its file system gives back no blocks of an open file
	diskHeld     int64 // the file's bytes not given back, counted in the held budget
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

// roomPoll is how often a producer waiting for room looks at the held
// budget again (others' responses free it without waking it).
const roomPoll = 100 * time.Millisecond

// Write appends a copy of p, waiting while the spool may not take it (see
// spool).
func (s *spool) Write(p []byte) (int, error) {
	_, err := s.put(p, true)
	return len(p), err
}

// offer is Write without the wait: it reports false, having taken
// nothing, when p would have to wait.
func (s *spool) offer(p []byte) (bool, error) {
	return s.put(p, false)
}

func (s *spool) put(p []byte, wait bool) (bool, error) {
	if len(p) == 0 {
		// nothing to keep, and nothing for the client (an ASGI app's
		// empty body messages): each used to take a chunk that counted
		// nothing, so an app sending them to a stalled client grew
		// Caddy's memory without bound
		return true, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	handedOver, full := false, false
	for {
		switch {
		case s.discard:
			return true, nil
		case handedOver:
			if s.memHeld == 0 {
				return true, nil // taken by the consumer
			}
		default:
			taken, own, err := s.takeLocked(p)
			if taken || err != nil {
				return taken, err
			}
			if !wait {
				return false, nil
			}
			full = own
			if s.fileW == s.fileR {
				// nothing of its own for the consumer to read and
				// free: p goes over in memory, past the budget
				held.mem.Add(int64(s.keepLocked(p)))
				handedOver = true
				continue
			}
		}
		// a wait for the budget counts against the exchange's timeout;
		// one for the response's own bound (a large download at its
		// client's pace) does not
		if err := s.waitRoomLocked(!full); err != nil {
			return false, err
		}
	}
}

// takeLocked keeps a copy of p, in memory or in the file, if the held
// budget and the spool's own bounds allow. It says whether it took p, and
// when not, whether the spool's own bound (spillLimit) refused it.
func (s *spool) takeLocked(p []byte) (taken, own bool, err error) {
	cost := s.costLocked(p)
	fits := s.file == nil && s.memHeld+cost <= s.memLimit
	if fits && (cost == 0 || held.takeMem(cost)) { // (room already counted is free)
		s.keepLocked(p)
		return true, false, nil
	}
	if unread := s.fileW - s.fileR; unread > 0 && unread+int64(len(p)) > s.spillLimit {
		return false, true, nil
	}
	if !held.takeAnswerDisk(len(p)) {
		return false, false, nil
	}
	if s.file == nil {
		f, err := os.CreateTemp("", "hearth-response-*")
		if err != nil {
			held.giveDisk(int64(len(p)))
			if !fits {
				return false, false, err
			}
			// no file to be had (an unwritable or full temporary
			// directory, no descriptor left): memory, past the budget,
			// rather than a response cut off; each response's own bound
			// still holds
			held.mem.Add(int64(s.keepLocked(p)))
			return true, false, nil
		}
		_ = os.Remove(f.Name()) // unlinked: gone when closed, whatever happens
		s.file = f
	}
	if _, err := s.file.WriteAt(p, s.fileW); err != nil {
		held.giveDisk(int64(len(p)))
		return false, false, err
	}
	s.fileW += int64(len(p))
	s.diskHeld += int64(len(p))
	s.signal()
	return true, false, nil
}

// waitRoomLocked waits until the consumer takes something or leaves, or
// roomPoll has passed, with the pause hook around the wait (counted, as
// the hook takes it); its error is the hook's.
func (s *spool) waitRoomLocked(counted bool) error {
	s.mu.Unlock()
	defer s.mu.Lock()
	resume := func() error { return nil }
	if s.pause != nil {
		resume = s.pause(counted)
	}
	t := time.NewTimer(roomPoll)
	select {
	case <-s.room:
	case <-t.C:
	}
	t.Stop()
	return resume()
}

// minChunk is the least capacity a chunk kept in memory is made with;
// the writes after a small one (an event stream's events, a CSV written a
// row at a time) fill it before another is made. What a spool keeps in
// memory counts as its chunks' capacity, so a response written a byte at
// a time holds about what it counts (each chunk's slice header, 24 bytes,
// is under 5% of it), where every write used to take a chunk of its own
// that cost Caddy ten times or more what it counted.
const minChunk = 512

// costLocked is what keeping p in memory would add to what s counts in the
// held budget: nothing when p fits the spare room of the last chunk kept
// (never one handed out: Next takes it out of mem first), else the
// capacity of a new chunk.
func (s *spool) costLocked(p []byte) int {
	if n := len(s.mem); n > 0 && cap(s.mem[n-1])-len(s.mem[n-1]) >= len(p) {
		return 0
	}
	return max(len(p), minChunk)
}

// keepLocked keeps a copy of p in memory and says what it adds to what s
// counts in the held budget (costLocked: the caller counts it there).
func (s *spool) keepLocked(p []byte) int {
	cost := s.costLocked(p)
	if n := len(s.mem); cost == 0 {
		s.mem[n-1] = append(s.mem[n-1], p...)
	} else {
		chunk := make([]byte, len(p), cost)
		copy(chunk, p)
		s.mem = append(s.mem, chunk)
	}
	s.memHeld += cost
	s.signal()
	return cost
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
			s.memHeld -= cap(chunk)
			s.lent = cap(chunk)
			more = len(s.mem) > 0 || s.fileR < s.fileW
			s.mu.Unlock()
			wakeUp(s.room)
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
	if s.fileR == s.fileW && len(s.mem) == 0 {
		// caught up: the file goes, and what it held with it
		s.closeFileLocked()
	} else if done := s.fileR &^ (punchUnit - 1); done-s.punched >= punchUnit {
		// what was read goes back to the file system (on a tmpfs, to
		// memory), and then to the budget: a download its client reads a
		// little slower than the app writes never catches up, and its
		// file would grow to the whole response (where the file system
		// cannot punch holes it does, counted, until it is caught up)
		if s.noPunch {
			// (tried once for this file)
		} else if unix.Fallocate(int(s.file.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, s.punched, done-s.punched) == nil {
			held.giveDisk(done - s.punched)
			s.diskHeld -= done - s.punched
			s.punched = done
		} else {
			s.noPunch = true
		}
	}
	return s.readBuf[:read], nil // valid until the next call, like every chunk
}

// punchUnit is what a spool's file gives back at a time: whole 64 KiB
// stretches, whole blocks of any file system.
const punchUnit = 64 << 10

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

// closeFileLocked closes the spill file and gives back what it held.
func (s *spool) closeFileLocked() {
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
	s.fileR, s.fileW, s.punched, s.noPunch = 0, 0, 0, false
	held.giveDisk(s.diskHeld)
	s.diskHeld = 0
}

// release frees the spill file and gives back the memory the spool holds.
func (s *spool) release() {
	s.closeFileLocked()
	held.giveMem(s.memHeld + s.readBufHeld)
	s.memHeld, s.readBuf, s.readBufHeld = 0, nil, 0
	s.giveBackLentLocked()
}

// Close frees resources once the consumer is done.
func (s *spool) Close() {
	s.mu.Lock()
	s.release()
	s.mu.Unlock()
}
