package hearth

import (
	"encoding/json"
	"testing"

	"github.com/hearth-dev/hearth/modules/internal/fuzzconfig"
)

// FuzzHearthConfig feeds arbitrary JSON as the config of the hearth app:
// decoded into App, then decoded, provisioned and validated by Caddy.
// Errors are expected; a panic fails.
func FuzzHearthConfig(f *testing.F) {
	for _, seed := range fuzzconfig.Seeds(f, func(path []string, _ map[string]any) bool {
		return len(path) == 2 && path[0] == "apps" && path[1] == "hearth"
	}) {
		f.Add(seed)
	}
	f.Add([]byte(`{"caddy_cpus": "0", "caddy_gc_floor": "-1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = json.Unmarshal(b, new(App))
		m, ok := fuzzconfig.Object(b)
		if !ok {
			return
		}
		app, _ := json.Marshal(m)
		_ = fuzzconfig.Validate(map[string]json.RawMessage{"hearth": app})
	})
}
