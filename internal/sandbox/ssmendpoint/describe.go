package ssmendpoint

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"
)

// describeRequest holds the two ways DescribeInstanceInformation filters
// by instance id; other filters are ignored.
type describeRequest struct {
	InstanceInformationFilterList []struct {
		Key      string   `json:"key"`
		ValueSet []string `json:"valueSet"`
	} `json:"InstanceInformationFilterList"`
	Filters []struct {
		Key    string   `json:"Key"`
		Values []string `json:"Values"`
	} `json:"Filters"`
}

type instanceInformation struct {
	InstanceID       string  `json:"InstanceId"`
	PingStatus       string  `json:"PingStatus"`
	AgentVersion     string  `json:"AgentVersion"`
	IsLatestVersion  bool    `json:"IsLatestVersion"`
	LastPingDateTime float64 `json:"LastPingDateTime"`
	PlatformType     string  `json:"PlatformType"`
	ResourceType     string  `json:"ResourceType"`
}

// describeInstanceInformation lists every node the endpoint knows:
// connected ones Online, the others ConnectionLost, optionally filtered by
// instance id. One page, no NextToken.
func (e *Endpoint) describeInstanceInformation(body []byte) (any, error) {
	var req describeRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &apiError{http.StatusBadRequest, "SerializationException", err.Error()}
	}
	var ids []string
	for _, f := range req.InstanceInformationFilterList {
		if f.Key == "InstanceIds" {
			ids = append(ids, f.ValueSet...)
		}
	}
	for _, f := range req.Filters {
		if f.Key == "InstanceIds" {
			ids = append(ids, f.Values...)
		}
	}
	list := []instanceInformation{}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.nodes {
		if len(ids) > 0 && !slices.Contains(ids, n.id) {
			continue
		}
		status := "Online"
		if n.lost {
			status = "ConnectionLost"
		}
		list = append(list, instanceInformation{InstanceID: n.id, PingStatus: status, AgentVersion: e.cfg.AgentVersion,
			IsLatestVersion: true, LastPingDateTime: float64(time.Now().Unix()), PlatformType: "Linux", ResourceType: "EC2Instance"})
	}
	return map[string]any{"InstanceInformationList": list}, nil
}
