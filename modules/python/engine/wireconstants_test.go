package engine

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-dev/hearth/modules/protocol"
)

// TestWireConstantsAgree: the Python runtime and the Go protocol package
// give every frame type, flag and limit the same value (the wire format is
// defined twice, once per side; nothing else would catch a drift).
func TestWireConstantsAgree(t *testing.T) {
	script := `import json, sys
sys.path.insert(0, sys.argv[1])
import hearth_runtime.protocol as w
print(json.dumps({n: getattr(w, n) for n in sys.argv[2:]}))`
	want := map[string]int{
		"HEADER_SIZE": protocol.HeaderSize, "MAX_PAYLOAD": protocol.MaxPayload,
		"HELLO": int(protocol.Hello), "FATAL": int(protocol.Fatal), "REQ_HEAD": int(protocol.RequestHead),
		"REQ_BODY": int(protocol.RequestBody), "RESP_HEAD": int(protocol.ResponseHead), "RESP_BODY": int(protocol.ResponseBody),
		"ABORT": int(protocol.Abort), "FORK": int(protocol.Fork), "CANCEL": int(protocol.Cancel),
		"WS_ACCEPT": int(protocol.WSAccept), "WS_MSG": int(protocol.WSMessage), "WS_CLOSE": int(protocol.WSClose),
		"MAX_RESPONSE_HEAD": maxResponseHeadBytes, "MAX_RESPONSE_HEADERS": maxResponseHeaders,
		"END": int(protocol.FlagEnd), "BINARY": int(protocol.FlagBinary), "TIMED_OUT": int(protocol.FlagTimedOut), "REFUSED": int(protocol.FlagRefused),
	}
	args := []string{"-B", "-c", script, filepath.Join("runtime")}
	for name := range want {
		args = append(args, name)
	}
	out, err := exec.Command(testPython(), args...).Output()
	if err != nil {
		t.Fatalf("reading the runtime's constants: %v", err)
	}
	var got map[string]int
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s is %d in the Python runtime, %d in Go", name, got[name], v)
		}
	}
	// every frame type Go knows is one of them
	for ty := protocol.Type(1); !strings.HasPrefix(ty.String(), "unknown"); ty++ {
		found := false
		for _, v := range want {
			found = found || v == int(ty)
		}
		if !found {
			t.Errorf("frame type %s (%d) has no Python constant in this test", ty, ty)
		}
	}
}
