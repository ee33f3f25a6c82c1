package ddns

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"
	"go.uber.org/zap"
)

// readOnlyProvider is a DNS provider that cannot set records.
type readOnlyProvider struct{}

func (readOnlyProvider) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "dns.providers.hearth_test_readonly", New: func() caddy.Module { return new(readOnlyProvider) }}
}

func init() { caddy.RegisterModule(readOnlyProvider{}) }

func TestProvisionErrors(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	base := func() *App {
		return &App{
			Domains:   map[string][]string{"example.net": {"@"}},
			IPSources: []IPSource{{Source: "static", IP: "203.0.113.1"}},
		}
	}
	for _, tc := range []struct {
		name   string
		modify func(*App)
		want   string
	}{
		{"read-only provider", func(a *App) { a.ProviderRaw = []byte(`{"name": "hearth_test_readonly"}`) }, "cannot set records"},
		{"a negative ttl", func(a *App) { a.TTL = caddy.Duration(-time.Minute) }, "ttl -1m0s is not between 1s and"},
		{"a ttl past what a record holds", func(a *App) { a.TTL = caddy.Duration(100 * 365 * 24 * time.Hour) }, "is not between 1s and"},
		{"a version twice", func(a *App) { a.Versions = []string{"ipv4", "ipv4"} }, "versions lists ipv4 twice"},
		{"one zone written twice", func(a *App) { a.Domains = map[string][]string{"example.net": {"@"}, "Example.NET.": {"home"}} }, "are the same zone"},
		{"one name written twice", func(a *App) { a.Domains = map[string][]string{"example.net": {"home", "HOME", "@"}} }, "zone example.net lists home.example.net twice"},
		{"the zone as @ and in full", func(a *App) { a.Domains = map[string][]string{"example.net": {"@", "example.net."}} }, "lists example.net twice"},
		{"a key from an unset variable", func(a *App) {
			a.ProviderRaw = []byte(`{"name": "rfc2136", "key_name": "k", "key_alg": "hmac-sha256", "key": "{env.HEARTH_TEST_UNSET_KEY}", "server": "127.0.0.1:53"}`)
		}, "the provider's key is empty: it comes from the environment variable HEARTH_TEST_UNSET_KEY, which is not set in Caddy's environment"},
		{"a TSIG algorithm that does not exist", func(a *App) {
			a.ProviderRaw = []byte(`{"name": "rfc2136", "key_name": "k", "key_alg": "hmac-sha257", "key": "c2VjcmV0c2VjcmV0", "server": "127.0.0.1:53"}`)
		}, `rfc2136 key_alg "hmac-sha257" is not a TSIG algorithm`},
		{"hmac-md5, which miekg/dns no longer signs with", func(a *App) {
			a.ProviderRaw = []byte(`{"name": "rfc2136", "key_name": "k", "key_alg": "hmac-md5", "key": "c2VjcmV0c2VjcmV0", "server": "127.0.0.1:53"}`)
		}, "hmac-md5 is no longer supported"},
		{"a key that is not base64", func(a *App) {
			a.ProviderRaw = []byte(`{"name": "rfc2136", "key_name": "k", "key_alg": "hmac-sha256", "key": "not base64!", "server": "127.0.0.1:53"}`)
		}, "rfc2136 key is not base64"},
		{"a server without its port", func(a *App) {
			a.ProviderRaw = []byte(`{"name": "rfc2136", "key_name": "k", "key_alg": "HMAC-SHA256.", "key": "c2VjcmV0c2VjcmV0", "server": "ns1.example.net"}`)
		}, `rfc2136 server "ns1.example.net" is not host:port`},
		{"no key name", func(a *App) {
			a.ProviderRaw = []byte(`{"name": "rfc2136", "key_name": "", "key_alg": "hmac-sha256", "key": "c2VjcmV0c2VjcmV0", "server": "127.0.0.1:53"}`)
		}, "rfc2136 key_name is empty"},
		{"an empty token", func(a *App) { a.ProviderRaw = []byte(`{"name": "cloudflare", "api_token": ""}`) }, "the provider's api_token is empty"},
		{"unknown provider", func(a *App) { a.ProviderRaw = []byte(`{"name": "nosuch"}`) }, "nosuch"},
		{"no provider", func(a *App) {}, "no provider"},
		{"bad version", func(a *App) { a.Versions = []string{"ipv5"} }, "not ipv4 or ipv6"},
		{"no domains", func(a *App) { a.Domains = nil }, "no domains"},
		{"empty zone", func(a *App) { a.Domains = map[string][]string{"example.net": nil} }, "lists no names"},
		{"a full name without its final dot", func(a *App) { a.Domains = map[string][]string{"example.net": {"home.example.net"}} },
			"home.example.net under zone example.net would be home.example.net.example.net; write the part before the zone (home), or the full name with a final dot (home.example.net.), or @ for the zone itself"},
		{"one http service twice", func(a *App) {
			a.IPSources = []IPSource{{Source: "http", URL: "https://ip.example/"}, {Source: "static", IP: "203.0.113.1"}, {Source: "http", URL: "https://IP.example"}}
		}, "ip_sources 1 and 3 are the same http service"},
		{"one http service by another path, port and a final dot", func(a *App) {
			a.IPSources = []IPSource{{Source: "http", URL: "https://api.ipify.org/?format=text"}, {Source: "http", URL: "https://API.ipify.org.:443/"}}
		}, "ip_sources 1 and 2 are the same http service (api.ipify.org)"},
		{"the zone's name without its final dot", func(a *App) { a.Domains = map[string][]string{"Example.net.": {"example.NET"}} }, "or @ for the zone itself"},
		{"a name outside ASCII", func(a *App) { a.Domains = map[string][]string{"example.net": {"bücher"}} },
			`write the name "bücher" as DNS holds it, in ASCII: xn--bcher-kva`},
		{"a zone outside ASCII", func(a *App) { a.Domains = map[string][]string{"bücher.example.": {"@"}} },
			`write the zone "bücher.example." as DNS holds it, in ASCII: xn--bcher-kva.example.`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := base()
			tc.modify(a)
			err := a.Provision(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// failingGetter is a provider whose records cannot be read back.
type failingGetter struct{}

func (failingGetter) GetRecords(context.Context, string) ([]libdns.Record, error) {
	return nil, errors.New("zone transfer refused")
}

// TestReadBackErrorShows: a read-back that fails is each record's
// last_error (GET /hearth/ddns, the dashboard), not only a log line,
// until a read-back succeeds.
func TestReadBackErrorShows(t *testing.T) {
	a := &App{Domains: map[string][]string{"example.net": {"home", "@"}}, getter: failingGetter{},
		state: &state{records: map[string]*recordState{}}, redact: newRedactor(nil, nil), logger: zap.NewNop()}
	a.readBack(context.Background(), "example.net", "ipv4")
	st := a.status()
	if len(st.Records) != 2 {
		t.Fatalf("records: %+v", st.Records)
	}
	for _, r := range st.Records {
		if r.LastError != "reading the records back: zone transfer refused" {
			t.Errorf("%s: last_error %q", r.Name, r.LastError)
		}
	}
}

// stuckGetter is a provider whose read-back never returns, whatever its
// context says (a zone transfer a server keeps sending).
type stuckGetter struct{ release chan struct{} }

func (g stuckGetter) GetRecords(context.Context, string) ([]libdns.Record, error) {
	<-g.release
	return nil, errors.New("released")
}

// TestReadBackThatNeverEnds: the app gives up on a read-back when its
// context ends (Stop, and every reload, wait for the app's loop), and
// starts no second one beside it.
func TestReadBackThatNeverEnds(t *testing.T) {
	g := stuckGetter{release: make(chan struct{})}
	defer close(g.release)
	a := &App{Domains: map[string][]string{"example.net": {"home"}}, getter: g,
		state: &state{records: map[string]*recordState{}}, redact: newRedactor(nil, nil), logger: zap.NewNop()}
	for i, want := range []string{"did not finish answering in time", "the last read-back is still running"} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		returned := make(chan struct{})
		go func() {
			a.readBack(ctx, "example.net", "ipv4")
			close(returned)
		}()
		select {
		case <-returned:
		case <-time.After(10 * time.Second):
			t.Fatalf("read-back %d still running 10 s after its context ended", i+1)
		}
		cancel()
		if st := a.status(); len(st.Records) != 1 || !strings.Contains(st.Records[0].LastError, want) {
			t.Errorf("read-back %d: %+v, want last_error with %q", i+1, st.Records, want)
		}
	}
}

// POST /hearth/ddns/check can find the app just as a reload stops it: the
// check is refused at once instead of waiting for a loop that has ended
// (Caddy's admin API sets no timeout of its own).
func TestCheckNowOfAStoppedApp(t *testing.T) {
	a := &App{done: make(chan struct{}), kick: make(chan chan error)}
	close(a.done)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.CheckNow(ctx); !errors.Is(err, errStopped) {
		t.Fatalf("CheckNow of a stopped app: %v, want errStopped", err)
	}
}

// stuckLock is Caddy's storage with another instance holding every lock.
type stuckLock struct{ certmagic.Storage }

func (stuckLock) Lock(ctx context.Context, _ string) error     { <-ctx.Done(); return ctx.Err() }
func (stuckLock) Unlock(context.Context, string) error         { return nil }
func (stuckLock) Store(context.Context, string, []byte) error  { return nil }
func (stuckLock) Load(context.Context, string) ([]byte, error) { return nil, errors.New("none") }

// countingSetter records the updates it is asked for.
type countingSetter struct{ calls int }

func (s *countingSetter) SetRecords(ctx context.Context, _ string, recs []libdns.Record) ([]libdns.Record, error) {
	s.calls++
	return recs, ctx.Err()
}

// A lock in Caddy's storage that does not come in time is given up, and
// the update still goes out with its own time (the wait for the lock used
// to take all of it, and the update "anyway" then failed at once).
func TestUpdateAfterALockThatNeverComes(t *testing.T) {
	defer func(wait time.Duration) { sharedLockWait = wait }(sharedLockWait)
	sharedLockWait = 50 * time.Millisecond
	setter := &countingSetter{}
	a := &App{Domains: map[string][]string{"example.net": {"home"}}, storage: stuckLock{}, setter: setter,
		state: &state{records: map[string]*recordState{}}, redact: newRedactor(nil, nil), logger: zap.NewNop()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := a.update(ctx, "example.net", "home", "ipv4", netip.MustParseAddr("203.0.113.5"), time.Now(), time.Time{})
	if err != nil || setter.calls != 1 {
		t.Fatalf("update after a lock that never came: %v, %d updates sent", err, setter.calls)
	}
}

// Caddy cleans up a config whose Provision failed: a refused reload must
// not release the state the running config holds.
func TestCleanupAfterAFailedProvisionKeepsTheState(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if _, _, err := memories.LoadOrNew("ddns", func() (caddy.Destructor, error) { return &state{records: map[string]*recordState{}}, nil }); err != nil {
		t.Fatal(err)
	}
	defer memories.Delete("ddns")
	before, _ := memories.References("ddns")
	refused := &App{Domains: map[string][]string{"example.net": {"@"}}} // no ip_source
	if err := refused.Provision(ctx); err == nil {
		t.Fatal("provisioned without an ip_source")
	}
	refused.Cleanup()
	if after, _ := memories.References("ddns"); after != before {
		t.Errorf("the running config's state had %d references, %d after a refused config's cleanup", before, after)
	}
}

// panickingLock is a storage module with a bug.
type panickingLock struct{ stuckLock }

func (panickingLock) Lock(context.Context, string) error { panic("a storage module's bug") }

// A check that panics (a module's bug) is logged and the loop
// runs again; POST /hearth/ddns/check, which asked for that check, is
// answered instead of waiting for good.
func TestCheckNowWhenTheCheckPanics(t *testing.T) {
	a := &App{Domains: map[string][]string{"example.net": {"home"}}, Versions: []string{"ipv4"},
		IPSources: []IPSource{{Source: "static", IP: "203.0.113.5"}}, Interval: caddy.Duration(time.Hour), RecheckEvery: 1,
		storage: panickingLock{}, setter: &countingSetter{}, state: &state{records: map[string]*recordState{}},
		redact: newRedactor(nil, nil), logger: zap.NewNop()}
	defer func(wait time.Duration) { sharedLockWait = wait }(sharedLockWait)
	sharedLockWait = 10 * time.Millisecond
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.CheckNow(ctx); !errors.Is(err, errCheckPanicked) {
		t.Fatalf("CheckNow while the check panics: %v, want errCheckPanicked", err)
	}
}

// blockingSetter is a provider module that ignores its context: its
// update returns only when release is closed.
type blockingSetter struct{ called, release chan struct{} }

func (s blockingSetter) SetRecords(context.Context, string, []libdns.Record) ([]libdns.Record, error) {
	s.called <- struct{}{}
	<-s.release
	return nil, errors.New("released")
}

// Stop (a reload's, Caddy's exit) does not wait for a provider module's
// update that ignores its context, and the record is not updated again
// with the same settings while that update has not returned.
func TestStopDoesNotWaitForAStuckUpdate(t *testing.T) {
	setter := blockingSetter{called: make(chan struct{}, 4), release: make(chan struct{})}
	defer close(setter.release)
	a := &App{Domains: map[string][]string{"example.net": {"home"}}, Versions: []string{"ipv4"},
		IPSources: []IPSource{{Source: "static", IP: "203.0.113.5"}}, Interval: caddy.Duration(time.Hour), RecheckEvery: 1000,
		storage: stuckLock{}, setter: setter, state: &state{records: map[string]*recordState{}},
		redact: newRedactor(nil, nil), logger: zap.NewNop()}
	defer func(wait time.Duration) { sharedLockWait = wait }(sharedLockWait)
	sharedLockWait = 10 * time.Millisecond
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-setter.called:
	case <-time.After(10 * time.Second):
		t.Fatal("no update was sent")
	}
	stopped := make(chan struct{})
	go func() { a.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop waits for a provider's update that ignores its context")
	}
	// the next config (the same settings) does not send a second update
	// of the record while the first has not returned
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := a.update(ctx, "example.net", "home", "ipv4", netip.MustParseAddr("203.0.113.6"), time.Now(), time.Time{})
	if err == nil || !strings.Contains(err.Error(), "still running") {
		t.Errorf("a second update while the first has not returned: %v", err)
	}
	select {
	case <-setter.called:
		t.Error("a second update was sent while the first had not returned")
	default:
	}
}

// orderedStorage records the order of the calls of an update under the
// shared lock.
type orderedStorage struct {
	stuckLock
	mu    sync.Mutex
	calls []string
}

func (s *orderedStorage) note(call string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call)
}
func (s *orderedStorage) Lock(context.Context, string) error { s.note("lock"); return nil }
func (s *orderedStorage) Unlock(context.Context, string) error {
	s.note("unlock")
	return nil
}
func (s *orderedStorage) Store(context.Context, string, []byte) error {
	s.note("store")
	return nil
}

// The note of an update, which the instances sharing Caddy's storage read
// to skip a write another one made, is stored under the record's lock:
// released before it, another instance could write in between and have
// its note overwritten by the older one.
func TestUpdateNotesItsWriteUnderTheLock(t *testing.T) {
	storage := &orderedStorage{}
	a := &App{Domains: map[string][]string{"example.net": {"home"}}, storage: storage, setter: &countingSetter{},
		state: &state{records: map[string]*recordState{}}, redact: newRedactor(nil, nil), logger: zap.NewNop()}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.update(ctx, "example.net", "home", "ipv4", netip.MustParseAddr("203.0.113.5"), time.Now(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	storage.mu.Lock()
	defer storage.mu.Unlock()
	if !slices.Equal(storage.calls, []string{"lock", "store", "unlock"}) {
		t.Errorf("calls %v, want the note stored before the lock's release", storage.calls)
	}
}
