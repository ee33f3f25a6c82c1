package hearth

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestSetMigrateReq(t *testing.T) {
	for _, c := range []struct {
		name, before, after string
		logged              bool
	}{
		{"off is turned on", "0\n", "1\n", true},
		{"on stays", "1\n", "1\n", false},
		{"another value stays", "2\n", "2\n", false},
		{"a kernel without it", "", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tcp_migrate_req")
			if c.before != "" {
				if err := os.WriteFile(path, []byte(c.before), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			core, logs := observer.New(zapcore.InfoLevel)
			setMigrateReq(path, zap.New(core))
			got, _ := os.ReadFile(path)
			if string(got) != c.after {
				t.Errorf("the setting is %q, want %q", got, c.after)
			}
			if (logs.Len() > 0) != c.logged {
				t.Errorf("logged %v, want a line: %v", logs.All(), c.logged)
			}
		})
	}
}
