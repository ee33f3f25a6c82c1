package hearth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// startingPool is a pool whose Start does what start says.
type startingPool struct {
	placedPool
	start func() error
}

func (p *startingPool) Start() error { return p.start() }

// TestPanickingPoolRefusesTheLoad: a pool whose Start panics fails that
// load with an error naming the app, logged with its stack; the other
// pools start; the process goes on.
func TestPanickingPoolRefusesTheLoad(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	started := false
	pools := []Pool{
		&startingPool{placedPool{name: "broken"}, func() error { var argv []string; _ = argv[0]; return nil }},
		&startingPool{placedPool{name: "fine"}, func() error { started = true; return nil }},
	}
	err := startPools(pools, zap.New(core))
	if err == nil || !strings.Contains(err.Error(), `app "broken"`) || !strings.Contains(err.Error(), "index out of range") {
		t.Fatalf("startPools: %v", err)
	}
	if !started {
		t.Error("the other pool was not started")
	}
	entries := logs.FilterMessage("recovered from a panic").All()
	if len(entries) != 1 || !strings.Contains(entries[0].ContextMap()["stack"].(string), "panics_test.go") {
		t.Errorf("the panic is not logged once with its stack: %v", logs.All())
	}
}

// TestPanickingAdminRoute: a panic in an admin route is a 500 for that
// request, not a dead Caddy.
func TestPanickingAdminRoute(t *testing.T) {
	HandleAdmin("panic-test", func(w http.ResponseWriter, r *http.Request, rest []string) error {
		var m map[string]int
		m["x"]++ // assignment to a nil map
		return nil
	})
	defer extraRoutes.Delete("panic-test")
	err := adminAPI{}.serveRecovered(httptest.NewRecorder(), httptest.NewRequest("GET", "/hearth/panic-test", nil))
	if err == nil || !strings.Contains(err.Error(), "nil map") || !strings.Contains(err.Error(), "GET /hearth/panic-test") {
		t.Fatalf("serveRecovered: %v", err)
	}
}
