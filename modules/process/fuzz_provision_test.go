package process

import (
	"encoding/json"
	"testing"

	"github.com/hearth-dev/hearth/modules/internal/fuzzconfig"
)

// FuzzProcessConfig feeds arbitrary JSON as the config of the process
// upstream source: decoded into Upstreams, then decoded, provisioned and
// validated by Caddy inside a reverse_proxy. Errors are expected; a panic
// fails.
func FuzzProcessConfig(f *testing.F) {
	for _, seed := range fuzzconfig.Seeds(f, func(_ []string, obj map[string]any) bool { return obj["source"] == "process" }) {
		f.Add(seed)
	}
	f.Add([]byte(`{"command": []}`))
	f.Add([]byte(`{"command": [""]}`))
	f.Add([]byte(`{"command": ["python3", "-m", "http.server", "{port}"], "workers": 2, "stop_signal": "sigint"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = json.Unmarshal(b, new(Upstreams))
		m, ok := fuzzconfig.Object(b)
		if !ok {
			return
		}
		m["source"] = json.RawMessage(`"process"`)
		up, _ := json.Marshal(m)
		h, _ := json.Marshal(map[string]json.RawMessage{"handler": json.RawMessage(`"reverse_proxy"`), "dynamic_upstreams": up})
		_ = fuzzconfig.Validate(fuzzconfig.Handler(h))
	})
}

// TestWorkersBounds: workers is 1 to 1024 in JSON (0 is the default, 1).
func TestWorkersBounds(t *testing.T) {
	for _, tc := range []struct {
		workers int
		ok      bool
	}{{0, true}, {1, true}, {1024, true}, {1025, false}, {100000, false}, {-1, false}} {
		u := Upstreams{Command: []string{"node"}, Workers: tc.workers}
		if _, err := u.resolve(); (err == nil) != tc.ok {
			t.Errorf("workers %d: %v", tc.workers, err)
		}
	}
}

// TestEmptyProgramRefused: a command without a program is refused at
// provision with a clear error.
func TestEmptyProgramRefused(t *testing.T) {
	for _, cmd := range []string{`[]`, `[""]`, `[" ", "x"]`} {
		u := Upstreams{}
		if err := json.Unmarshal([]byte(`{"command": `+cmd+`}`), &u); err != nil {
			t.Fatal(err)
		}
		if _, err := u.resolve(); err == nil {
			t.Fatalf("command %s accepted", cmd)
		}
	}
}
