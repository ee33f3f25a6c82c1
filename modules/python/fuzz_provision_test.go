package python

import (
	"encoding/json"
	"testing"

	"github.com/hearth-dev/hearth/modules/hearth"
	"github.com/hearth-dev/hearth/modules/internal/fuzzconfig"
)

// fuzzHandler feeds arbitrary JSON as the config of handler (wsgi or asgi):
// decoded into the module type, then decoded, provisioned and validated
// by Caddy (caddy.Validate). Errors are expected; a panic fails.
func fuzzHandler(f *testing.F, handler string, into func() any) {
	for _, seed := range fuzzconfig.Seeds(f, func(_ []string, obj map[string]any) bool { return obj["handler"] == handler }) {
		f.Add(seed)
	}
	// issue 15: an empty before_start command panicked in runCommand
	f.Add([]byte(`{"app": "app:app", "before_start": [[]]}`))
	f.Add([]byte(`{"app": "app:app", "before_start": [[""]]}`))
	f.Add([]byte(`{"app": "app:app", "before_start": [["python", "manage.py", "migrate"], []]}`))
	f.Add([]byte(`{"app": "app:app", "workers": -1, "max_workers": 2, "threads": 0}`))
	f.Add([]byte(`{"app": "app:app", "max_queue": 1, "max_queue_per_client": -5}`))
	f.Add([]byte(`{"app": "app:app", "max_queue_per_client": 4000000}`))
	f.Add([]byte(`{"app": "app:app", "guard": {"mode": "warn", "allow": ["HG-HOST-01"], "http": {"refuse": ["["]}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = json.Unmarshal(b, into())
		m, ok := fuzzconfig.Object(b)
		if !ok {
			return
		}
		m["handler"], _ = json.Marshal(handler)
		h, _ := json.Marshal(m)
		_ = fuzzconfig.Validate(fuzzconfig.Handler(h))
	})
}

func FuzzWSGIConfig(f *testing.F) { fuzzHandler(f, "wsgi", func() any { return new(WSGI) }) }

func FuzzASGIConfig(f *testing.F) { fuzzHandler(f, "asgi", func() any { return new(ASGI) }) }

// TestBeforeStartEmptyRefused: a before_start command list without a
// program is refused at provision with a clear error, never a panic.
func TestBeforeStartEmptyRefused(t *testing.T) {
	listen, enabled := hearth.AdminEndpoint() // provisioning the hearth app records the config's (disabled) admin API
	defer hearth.SetAdminEndpoint(listen, !enabled)
	for _, bs := range []string{`[[]]`, `[[""]]`, `[["python", "-V"], []]`} {
		h := []byte(`{"handler": "wsgi", "app": "app:app", "before_start": ` + bs + `}`)
		err := fuzzconfig.Validate(fuzzconfig.Handler(h))
		if err == nil {
			t.Fatalf("before_start %s: config accepted", bs)
		}
		t.Logf("before_start %s: %v", bs, err)
	}
}
