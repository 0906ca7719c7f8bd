'use strict';
'require baseclass';
'require rpc';

/*
 * Status → Overview card: kill-switch state and how many exemptions and forwards exist.
 * Renders nothing when the wormhole service does not answer (not installed, or no ACL).
 * Router-supplied text goes into text nodes only (array children of E()).
 */

var callStatus = rpc.declare({ object: 'wormhole', method: 'status', expect: { '': {} } });

function isObject(v) {
	return v != null && typeof v == 'object';
}

return baseclass.extend({
	title: _('Inbound Services'),

	load: function() {
		return L.resolveDefault(callStatus(), {});
	},

	render: function(st) {
		if (!isObject(st) || !st.backend)
			return null;

		var ks = isObject(st.killswitch) ? st.killswitch : {},
		    counts = isObject(st.counts) ? st.counts : {},
		    la = isObject(st.last_apply) ? st.last_apply : {};

		var rows = [
			[ _('Kill-switch'), ks.active ? '● ' + _('Active via %s').format(ks.via || '?') : _('Off'), 'wh-killswitch' ],
			[ _('Exemptions'), String(counts.exemptions || 0), 'wh-count-exemptions' ],
			[ _('Forwards'), String(counts.redirects || 0), 'wh-count-redirects' ],
			[ _('Entries in effect'), String(counts.active || 0), 'wh-count-active' ]
		];

		if (counts.errors)
			rows.push([ _('Entries with errors'), String(counts.errors), 'wh-count-errors' ]);

		if (st.enabled === false)
			rows.push([ _('Service'), _('Disabled'), 'wh-enabled' ]);

		if (la.ok === false)
			rows.push([ _('Last apply'), _('Failed: %s').format(la.error || '?'), 'wh-last-apply' ]);

		return E('table', { 'class': 'table', 'id': 'wh-overview' }, rows.map(function(r) {
			return E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left', 'width': '33%' }, [ r[0] ]),
				E('td', { 'class': 'td left', 'id': r[2] }, [ r[1] ])
			]);
		}));
	}
});
