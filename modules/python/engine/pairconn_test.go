package engine

import (
	"io"
	"testing"
	"time"

	"github.com/hearth-dev/hearth/modules/internal/rawio/rawiotest"
)

// A worker channel's reads and writes enter no system-call state (they go
// through rawio), where the same calls on its Unix socket do.
func TestChannelReadsAndWritesEnterNoSystemCallState(t *testing.T) {
	caddy, worker := channelPair(t)
	go io.Copy(worker, worker) // the worker echoes
	pair := caddy.(*pairConn)
	_ = pair.SetDeadline(time.Now().Add(30 * time.Second))
	exchange := func(write func([]byte) (int, error), read func([]byte) (int, error)) func() {
		return func() {
			buf := make([]byte, 4)
			for range 100 {
				if _, err := write([]byte("ping")); err != nil {
					t.Error(err)
					return
				}
				for got := 0; got < len(buf); {
					n, err := read(buf[got:])
					if err != nil {
						t.Error(err)
						return
					}
					got += n
				}
			}
		}
	}
	n := rawiotest.SystemCalls(t,
		exchange(pair.Write, pair.Read),
		exchange(pair.UnixConn.Write, pair.UnixConn.Read),
		func() {
			if _, err := pair.Writev([][]byte{[]byte("pi"), []byte("ng")}); err != nil {
				t.Error(err)
			}
		})
	if n[1] < 100 {
		t.Fatalf("the tracer saw %d system calls of the Unix socket's 200 writes and reads: it cannot tell", n[1])
	}
	if n[0] != 0 || n[2] != 0 {
		t.Fatalf("the channel's writes and reads entered the system-call state %d times, its writev %d", n[0], n[2])
	}
}
