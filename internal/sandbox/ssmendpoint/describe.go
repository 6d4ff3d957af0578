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
// Targets as Online, ConnectionLost as ConnectionLost, optionally
// filtered by instance id. One page, no NextToken.
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
	for _, id := range slices.Concat(e.cfg.Targets, e.cfg.ConnectionLost) {
		if len(ids) > 0 && !slices.Contains(ids, id) || slices.ContainsFunc(list, func(i instanceInformation) bool { return i.InstanceID == id }) {
			continue
		}
		status := "Online"
		if slices.Contains(e.cfg.ConnectionLost, id) {
			status = "ConnectionLost"
		}
		list = append(list, instanceInformation{InstanceID: id, PingStatus: status, AgentVersion: e.cfg.AgentVersion,
			IsLatestVersion: true, LastPingDateTime: float64(time.Now().Unix()), PlatformType: "Linux", ResourceType: "EC2Instance"})
	}
	return map[string]any{"InstanceInformationList": list}, nil
}
