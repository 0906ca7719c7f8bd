'use strict';
'require view';
'require dom';
'require poll';

/*
 * Stand-in for Status → Overview (luci-mod-status view/status/index.js): loads each
 * include named in L.env.includes (upstream lists view/status/include/ on the router),
 * shows those whose render() returns something, each in a .cbi-section under its
 * title, and refreshes them with poll.
 */

return view.extend({
	load: function() {
		return Promise.all((L.env.includes || []).map(function(name) {
			return L.require('view.status.include.' + name);
		}));
	},

	renderInclude: function(include, container) {
		return Promise.resolve(include.load()).then(function(data) {
			var content = include.render(data);
			return Promise.resolve(content).then(function(content) {
				if (content == null) {
					container.style.display = 'none';
					return;
				}
				container.style.display = '';
				dom.content(container.lastElementChild, content);
			});
		});
	},

	render: function(includes) {
		var self = this, sections = includes.map(function(include) {
			return E('div', { 'class': 'cbi-section', 'style': 'display:none' }, [
				E('h3', {}, [ include.title ]),
				E('div', {})
			]);
		});

		includes.forEach(function(include, i) {
			var refresh = function() { return self.renderInclude(include, sections[i]) };
			refresh();
			poll.add(refresh);
		});

		return E('div', {}, [ E('h2', {}, [ _('Status') ]) ].concat(sections));
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});
