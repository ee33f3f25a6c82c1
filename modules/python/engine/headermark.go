package engine

import "net/http"

// headerMark remembers which keys a response's header held, and how many
// values each, before the app's response head was added to it, so that a
// response the app failed to send (its worker broke, or it aborted,
// between its head and its first body frame) goes out as Caddy's error
// without the app's headers: no cookie the app set, no Content-Length or
// Location of a response that never came.
type headerMark struct {
	n      int
	keys   [16]string
	counts [16]int
	more   map[string]int // every key, when there were more than 16 (an allocation)
}

// markHeader records h as it is now.
func markHeader(h http.Header) headerMark {
	var m headerMark
	if len(h) > len(m.keys) {
		m.more = make(map[string]int, len(h))
		for k, v := range h {
			m.more[k] = len(v)
		}
		return m
	}
	for k, v := range h {
		m.keys[m.n], m.counts[m.n] = k, len(v)
		m.n++
	}
	return m
}

// count is how many values key had when h was marked, and whether it was
// there at all.
func (m *headerMark) count(key string) (int, bool) {
	if m.more != nil {
		n, ok := m.more[key]
		return n, ok
	}
	for i := 0; i < m.n; i++ {
		if m.keys[i] == key {
			return m.counts[i], true
		}
	}
	return 0, false
}

// restore takes out of h every key and value added since it was marked.
func (m *headerMark) restore(h http.Header) {
	for k, v := range h {
		n, had := m.count(k)
		switch {
		case !had:
			delete(h, k)
		case len(v) > n:
			h[k] = v[:n:n]
		}
	}
}
