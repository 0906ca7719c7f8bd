'use strict';
'require baseclass';
'require dom';

/*
 * Stand-in for the part of LuCI's ui class (luci-base ui.js) the wormhole views use,
 * written for the browser tests with the same observable behaviour:
 *
 *  - addNotification(title, children, ...classes) puts an .alert-message (with the
 *    classes and a Dismiss button) first in #maincontent and returns it; `children`
 *    goes through dom.append, so a bare string is markup there as upstream;
 *  - showModal(title, children) / hideModal();
 *  - createHandlerFn(ctx, fn, ...args) makes an event handler that ignores clicks while
 *    its previous promise is pending and marks the button busy (.spinning, disabled);
 *  - instantiateView(path) loads view.<path> (the loader instantiates it);
 *  - the form widgets ui.Textfield, ui.Select, ui.Checkbox and ui.DynamicList: new
 *    Widget(value, [choices,] options), render() -> a node in the markup upstream gives
 *    (a frame element with options.id holding .cbi-input-text / .cbi-input-select /
 *    .cbi-checkbox / .cbi-dynlist), getValue() and setValue(); DynamicList's getValue
 *    includes the text typed but not yet added, as upstream;
 *  - tabs.initTabGroup(panes): panes are [data-tab][data-tab-title] siblings; it puts a
 *    ul.cbi-tabmenu (li.cbi-tab / li.cbi-tab-disabled with an <a>) before their parent,
 *    marks the active pane data-tab-active="true" and switches on a click of the link.
 */

var modal = null;

/* Upstream ui.js hides inactive panes by this attribute; the test theme has no rule for it. */
function paneShown(pane, on) {
	pane.setAttribute('data-tab-active', on ? 'true' : 'false');
	pane.style.display = on ? '' : 'none';
}

var AbstractElement = baseclass.extend({
	__init__: function(value, options) {
		this.value = value;
		this.options = Object.assign({}, options);
	},

	getValue: function() {
		return this.node ? this.input().value : this.value;
	},

	setValue: function(value) {
		if (this.node)
			this.input().value = value == null ? '' : value;
		else
			this.value = value;
	},

	input: function() {
		return this.node.querySelector('input, select');
	}
});

var Textfield = AbstractElement.extend({
	render: function() {
		var o = this.options;
		this.node = E('div', { 'id': o.id }, [ E('input', {
			'id': o.id ? 'widget.' + o.id : null, 'name': o.name, 'type': o.password ? 'password' : 'text',
			'class': o.password ? 'cbi-input-password' : 'cbi-input-text',
			'readonly': o.readonly ? '' : null, 'disabled': o.disabled ? '' : null,
			'maxlength': o.maxlength, 'placeholder': o.placeholder, 'value': this.value == null ? '' : this.value
		}) ]);
		return this.node;
	}
});

var Select = AbstractElement.extend({
	__init__: function(value, choices, options) {
		this.value = value;
		this.choices = choices || {};
		this.options = Object.assign({ widget: 'select' }, options);
	},

	render: function() {
		var o = this.options, keys = Object.keys(this.choices), sel;
		if (o.sort === true)
			keys.sort();
		sel = E('select', { 'id': o.id ? 'widget.' + o.id : null, 'name': o.name, 'class': 'cbi-input-select',
			'disabled': o.readonly || o.disabled ? '' : null });
		if (o.optional)
			sel.appendChild(E('option', { 'value': '' }, [ o.placeholder || '-- Please choose --' ]));
		for (var i = 0; i < keys.length; i++)
			sel.appendChild(E('option', { 'value': keys[i], 'selected': keys[i] == this.value ? '' : null },
				[ this.choices[keys[i]] || keys[i] ]));
		this.node = E('div', { 'id': o.id }, [ sel ]);
		return this.node;
	}
});

var Checkbox = AbstractElement.extend({
	__init__: function(value, options) {
		this.value = value;
		this.options = Object.assign({ value_enabled: '1', value_disabled: '0' }, options);
	},

	render: function() {
		var o = this.options, id = 'cb%08x'.format(Math.random() * 0xffffffff);
		this.node = E('div', { 'id': o.id, 'class': 'cbi-checkbox' }, [
			o.hiddenname ? E('input', { 'type': 'hidden', 'name': o.hiddenname, 'value': 1 }) : '',
			E('input', { 'id': id, 'name': o.name, 'type': 'checkbox', 'value': o.value_enabled,
				'checked': this.value == o.value_enabled ? '' : null, 'disabled': o.disabled ? '' : null,
				'data-widget-id': o.id ? 'widget.' + o.id : null }),
			E('label', { 'for': id })
		]);
		return this.node;
	},

	input: function() {
		return this.node.querySelector('input[type=checkbox]');
	},

	getValue: function() {
		if (!this.node)
			return this.value;
		return this.input().checked ? this.options.value_enabled : this.options.value_disabled;
	},

	setValue: function(value) {
		if (this.node)
			this.input().checked = (value == this.options.value_enabled);
		else
			this.value = value;
	}
});

var DynamicList = AbstractElement.extend({
	__init__: function(values, choices, options) {
		this.value = Array.isArray(values) ? values : (values != null && values !== '' ? [ values ] : []);
		this.choices = choices;
		this.options = Object.assign({}, options);
	},

	render: function() {
		var o = this.options, self = this;
		var text = E('input', { 'type': 'text', 'class': 'cbi-input-text', 'placeholder': o.placeholder,
			'disabled': o.readonly || o.disabled ? '' : null });
		var addButton = E('div', { 'class': 'btn cbi-button cbi-button-add' }, [ '+' ]);
		this.node = E('div', { 'id': o.id, 'class': 'cbi-dynlist' }, [ E('div', { 'class': 'add-item control-group' }, [ text, addButton ]) ]);
		this.value.forEach(function(v) { self.addItem(v) });

		var add = function() {
			if (!text.value.length || text.classList.contains('cbi-input-invalid'))
				return;
			self.addItem(text.value);
			text.value = '';
		};
		text.addEventListener('keydown', function(ev) {
			if (ev.key === 'Enter') {
				ev.preventDefault();
				add();
			}
		});
		addButton.addEventListener('click', add);
		this.node.addEventListener('click', function(ev) {
			var item = ev.target.closest('.item');
			if (item && !o.disabled)
				item.parentNode.removeChild(item);
		});
		return this.node;
	},

	/* Upstream: a value already in the list is not added twice; items go before .add-item. */
	addItem: function(value) {
		var exists = Array.prototype.some.call(this.node.querySelectorAll('.item > input[type=hidden]'),
			function(i) { return i.value === value });
		if (exists)
			return;
		var item = E('div', { 'class': 'item', 'tabindex': 0 }, [
			E('span', {}, [ String(value) ]),
			E('input', { 'type': 'hidden', 'name': this.options.name, 'value': value })
		]);
		this.node.insertBefore(item, this.node.querySelector('.add-item'));
	},

	/* Upstream: the text typed but not added counts, untrimmed, unless it is invalid or a duplicate. */
	getValue: function() {
		if (!this.node)
			return this.value;
		var out = [], text = this.node.querySelector('.add-item > input[type=text]');
		this.node.querySelectorAll('.item > input[type=hidden]').forEach(function(i) { out.push(i.value) });
		if (text && text.value.match(/\S/) && !text.classList.contains('cbi-input-invalid') && out.indexOf(text.value) < 0)
			out.push(text.value);
		return out;
	},

	setValue: function(values) {
		this.value = Array.isArray(values) ? values : (values ? [ values ] : []);
		if (!this.node)
			return;
		this.node.querySelectorAll('.item').forEach(function(i) { i.parentNode.removeChild(i) });
		this.value.forEach(this.addItem.bind(this));
	}
});

var Tabs = baseclass.extend({
	initTabGroup: function(panes) {
		panes = Array.prototype.slice.call(panes || []);
		if (!panes.length)
			return;
		var group = panes[0].parentNode, menu = E('ul', { 'class': 'cbi-tabmenu' }), selected = 0;
		if (group.getAttribute('data-initialized') === 'true')
			return;
		panes.forEach(function(pane, i) {
			if (pane.getAttribute('data-tab-active') === 'true')
				selected = i;
			menu.appendChild(E('li', { 'class': 'cbi-tab-disabled', 'data-tab': pane.getAttribute('data-tab') }, [
				E('a', { 'href': '#', 'click': function(ev) {
					ev.preventDefault();
					panes.forEach(function(p, j) {
						paneShown(p, j == i);
						menu.children[j].className = (j == i) ? 'cbi-tab' : 'cbi-tab-disabled';
					});
				} }, [ pane.getAttribute('data-tab-title') ])
			]));
		});
		group.parentNode.insertBefore(menu, group);
		group.setAttribute('data-initialized', 'true');
		panes.forEach(function(p, j) {
			paneShown(p, j == selected);
			menu.children[j].className = (j == selected) ? 'cbi-tab' : 'cbi-tab-disabled';
		});
	}
});

return baseclass.extend({
	AbstractElement: AbstractElement,
	Textfield: Textfield,
	Select: Select,
	Checkbox: Checkbox,
	DynamicList: DynamicList,
	tabs: new Tabs(),

	addNotification: function(title, children /*, ...classes */) {
		var mc = document.querySelector('#maincontent') || document.body,
		    classes = Array.prototype.slice.call(arguments, 2);

		var msg = E('div', { 'class': 'alert-message fade-in', 'style': 'display:flex' }, [
			E('div', { 'style': 'flex:10' }),
			E('div', { 'style': 'flex:1 1 auto; display:flex' }, [
				E('button', {
					'class': 'btn',
					'style': 'margin-left:auto; margin-top:auto',
					'click': function(ev) {
						var n = dom.parent(ev.target, '.alert-message');
						if (n && n.parentNode)
							n.parentNode.removeChild(n);
					}
				}, [ _('Dismiss') ])
			])
		]);

		if (title != null)
			dom.append(msg.firstElementChild, E('h4', {}, title));

		dom.append(msg.firstElementChild, children);

		for (var i = 0; i < classes.length; i++)
			msg.classList.add(classes[i]);

		mc.insertBefore(msg, mc.firstElementChild);
		return msg;
	},

	showModal: function(title, children /*, ...classes */) {
		if (!modal)
			modal = document.body.appendChild(E('div', { 'id': 'modal_overlay' },
				E('div', { 'class': 'modal', 'role': 'dialog', 'aria-modal': 'true' })));

		var dlg = modal.firstElementChild;
		dlg.className = 'modal';
		for (var i = 2; i < arguments.length; i++)
			dlg.classList.add(arguments[i]);
		dom.content(dlg, null);
		if (title != null)
			dom.append(dlg, E('h4', {}, title));
		dom.append(dlg, children);
		document.body.classList.add('modal-overlay-active');
		return dlg;
	},

	hideModal: function() {
		document.body.classList.remove('modal-overlay-active');
	},

	createHandlerFn: function(ctx, fn /*, ...args */) {
		var args = this.varargs(arguments, 2);

		if (typeof fn == 'string')
			fn = ctx[fn];

		if (typeof fn != 'function')
			return null;

		return function(ev) {
			var t = ev.currentTarget;

			if (t.classList.contains('spinning'))
				return;

			t.classList.add('spinning');
			t.disabled = true;

			if (t.blur)
				t.blur();

			Promise.resolve(fn.apply(ctx, args.concat([ ev ]))).finally(function() {
				t.classList.remove('spinning');
				t.disabled = false;
			});
		};
	},

	instantiateView: function(path) {
		return L.require('view.' + path.replace(/\//g, '.')).catch(L.error);
	}
});
