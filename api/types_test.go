package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/bifrost-mq/bifrost/api"
)

// TestStoreIDsAreStrings: store IDs are random 64-bit numbers; as JSON
// numbers, JavaScript (and any decoder reading doubles) loses their last
// digits (5289351046317147069 reads as 5289351046317147000). They are
// written as strings and read from either form.
func TestStoreIDsAreStrings(t *testing.T) {
	const id = 5289351046317147069
	b, err := json.Marshal(api.Range{ID: 7, Replicas: []api.StoreID{id}, Leader: id})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"replicas":["5289351046317147069"]`) || !strings.Contains(string(b), `"leader":"5289351046317147069"`) {
		t.Errorf("store IDs not written as strings: %s", b)
	}
	b, err = json.Marshal(api.Member{Name: "s", StoreID: id})
	if err != nil || !strings.Contains(string(b), `"store_id":"5289351046317147069"`) {
		t.Errorf("member: %s %v", b, err)
	}
	for _, in := range []string{`{"store_id":"5289351046317147069"}`, `{"store_id":5289351046317147069}`} {
		var m api.Member
		if err := json.Unmarshal([]byte(in), &m); err != nil || m.StoreID != id {
			t.Errorf("%s read as %d, %v", in, m.StoreID, err)
		}
	}
	var m api.Member
	if err := json.Unmarshal([]byte(`{"store_id":"12x"}`), &m); err == nil {
		t.Error("a malformed store ID was accepted")
	}
}
