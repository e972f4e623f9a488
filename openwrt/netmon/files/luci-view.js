'use strict';
'require view';

// LuCI → Status → netmon: a link to netmon's own web UI on this router (port 8080 by
// default; change it here too if `port` in /etc/netmon/netmon.toml changes).
return view.extend({
	render: function() {
		var url = 'http://' + window.location.hostname + ':8080/';
		return E('div', { 'class': 'cbi-section' }, [
			E('h2', {}, 'netmon'),
			E('p', {}, [ 'netmon serves its own interface: ', E('a', { 'href': url, 'target': '_blank', 'rel': 'noopener' }, url) ])
		]);
	},
	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
