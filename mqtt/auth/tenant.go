package auth

import "fmt"

// MaxTenantLen is the longest tenant name.
const MaxTenantLen = 64

// ValidateTenant checks a tenant name: 1 to MaxTenantLen ASCII letters,
// digits, '.', '_' or '-'. Tenants prefix every stored key, name metrics
// and logs, and come from files and certificates, so their alphabet is
// kept to what no layer has to escape.
func ValidateTenant(name string) error {
	if name == "" {
		return fmt.Errorf("tenant name is empty")
	}
	if len(name) > MaxTenantLen {
		return fmt.Errorf("tenant name %.20q... is %d bytes, longer than %d", name, len(name), MaxTenantLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("tenant name %q: byte %d (%q) is not a letter, digit, '.', '_' or '-'", name, i, c)
		}
	}
	return nil
}
