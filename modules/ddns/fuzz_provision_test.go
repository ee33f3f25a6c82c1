package ddns

import (
	"encoding/json"
	"testing"

	"github.com/hearth-dev/hearth/modules/internal/fuzzconfig"
)

// FuzzDDNSConfig feeds arbitrary JSON as the config of the ddns app:
// decoded into App, then decoded, provisioned and validated by Caddy
// (Provision contacts nothing; Start is not run). Errors are expected; a
// panic fails.
func FuzzDDNSConfig(f *testing.F) {
	for _, seed := range fuzzconfig.Seeds(f, func(path []string, _ map[string]any) bool {
		return len(path) == 2 && path[0] == "apps" && path[1] == "ddns"
	}) {
		f.Add(seed)
	}
	f.Add([]byte(`{"provider": {"name": "dyndns2"}, "domains": {"example.net": [""]}, "ip_sources": [{"source": "upnp", "url": ":"}]}`))
	f.Add([]byte(`{"provider": {"name": "duckdns"}, "domains": {"": []}, "ip_sources": [{}], "versions": [""]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = json.Unmarshal(b, new(App))
		m, ok := fuzzconfig.Object(b)
		if !ok {
			return
		}
		app, _ := json.Marshal(m)
		_ = fuzzconfig.Validate(map[string]json.RawMessage{"ddns": app})
	})
}
