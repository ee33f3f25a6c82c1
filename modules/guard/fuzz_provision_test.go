package guard

import (
	"encoding/json"
	"testing"

	"github.com/hearth-dev/hearth/modules/internal/fuzzconfig"
)

// FuzzGuardConfig feeds arbitrary JSON as the config of the guard
// handler: decoded into Guard, then decoded, provisioned and validated by
// Caddy. Errors are expected; a panic fails.
func FuzzGuardConfig(f *testing.F) {
	for _, seed := range fuzzconfig.Seeds(f, func(_ []string, obj map[string]any) bool { return obj["handler"] == "guard" }) {
		f.Add(seed)
	}
	f.Add([]byte(`{"hosts": ["", "*", "*.", "[::1]:80"], "refuse": ["[", ""], "scan_limit": -1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = json.Unmarshal(b, new(Guard))
		m, ok := fuzzconfig.Object(b)
		if !ok {
			return
		}
		m["handler"] = json.RawMessage(`"guard"`)
		h, _ := json.Marshal(m)
		_ = fuzzconfig.Validate(fuzzconfig.Handler(h))
	})
}
