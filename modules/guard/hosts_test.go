package guard

import (
	"strings"
	"testing"
)

// TestAppHostsMatchLikeDjango: the hosts an app allows are matched as
// Django's validate_host matches ALLOWED_HOSTS.
func TestAppHostsMatchLikeDjango(t *testing.T) {
	hosts := NewAppHosts([]string{"localhost", ".example.net", "[::1]", "192.168.1.5", "Mixed.Example"}, "ALLOWED_HOSTS")
	for host, want := range map[string]bool{
		"localhost": true, "localhost:2929": true, "LOCALHOST": true, "localhost.": true,
		"example.net": true, "www.example.net": true, "a.b.example.net:443": true,
		"[::1]": true, "[::1]:2929": true, "192.168.1.5:2929": true, "mixed.example": true,
		"evil.example": false, "localhost.evil.example": false, "notexample.net": false,
		"127.0.0.1": false, "[::2]:80": false, "": false, ":2929": false, "192.168.1.50": false,
		// Django's host_validation_re refuses these too
		"localhost:evil.example": false, "[localhost]": false, "[localhost]:80": false, "::1": false,
	} {
		if got := hosts.Allows(host); got != want {
			t.Errorf("Allows(%q) = %v, want %v", host, got, want)
		}
	}
	if NewAppHosts([]string{"example.net", "*"}, "ALLOWED_HOSTS") != nil {
		t.Errorf("'*' among the hosts must mean no check")
	}
	if NewAppHosts(nil, "ALLOWED_HOSTS").Allows("localhost") {
		t.Errorf("an empty list allows nothing")
	}
}

// TestPageName: the log names a replaced debug page without any of its
// contents beyond the exception's name.
func TestPageName(t *testing.T) {
	for page, want := range map[string]string{
		"<html><head><title>RuntimeError at /boom</title>":                                            "RuntimeError",
		"<title>ZeroDivisionError: division by zero (secret hunter2) // Werkzeug Debugger</title>":    "ZeroDivisionError",
		"<TITLE>Page not found at /nowhere</TITLE>":                                                   "Page not found",
		"<title>DisallowedHost at /</title>":                                                          "DisallowedHost",
		"Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'password hunter2'\n": "KeyError",
		"<title>caf\xc3\xa9 hunter2</title>":                                                          "",
		"plain text":                                                                                  "",
		// letters whose lower case has another length: the title's place in the page is its own
		strings.Repeat("\u023a", 200) + "<title>KeyError at /</title>":                                         "KeyError",
		strings.Repeat("\u212a", 28) + "db_password = 'hunter2-s3cret-value-xyz' <title>KeyError at /</title>": "KeyError",
	} {
		if got := pageName([]byte(page)); got != want {
			t.Errorf("pageName(%q) = %q, want %q", page, got, want)
		}
	}
}
