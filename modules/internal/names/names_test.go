package names

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for name, ok := range map[string]bool{
		"web": true, "celery-beat": true, "app_2.v1": true, strings.Repeat("a", 64): true,
		"": false, strings.Repeat("a", 65): false, "../../x": false, "a/b": false, ".hidden": false,
		"-rf": false, "a b": false, "é": false, "a\n": false, "a;b": false,
	} {
		if err := Check("service", name, "service <name> { … }"); (err == nil) != ok {
			t.Errorf("%q: %v, want accepted %v", name, err, ok)
		}
	}
	if err := Check("job", "", "job <name> { … }"); err == nil || !strings.Contains(err.Error(), "`job <name> { … }`") {
		t.Errorf("an empty name's error does not say how to name one: %v", err)
	}
}

func TestCheckAccount(t *testing.T) {
	for name, ok := range map[string]bool{
		"caddy": true, "hearth-apps": true, "www-data": true, "svc_1": true, "john.doe": true, "1001": true,
		"jdoe@corp.example": true, "host$": true,
		"": false, strings.Repeat("a", 65): false, "-u": false, "a b": false, "a\n[Service]": false,
		"www;curl x|sh;#": false, "a$b": false, "$": false, "@x": false, "a:b": false, "é": false, "a/b": false,
		"a$(id)": false, "a`id`": false, "a%n": false,
	} {
		if err := CheckAccount("user", name); (err == nil) != ok {
			t.Errorf("%q: %v, want accepted %v", name, err, ok)
		}
	}
}
