import { render } from 'preact';
import './styles.css';
import { App } from './components/App.jsx';
import { listenToWorker } from './push.js';

listenToWorker();

render(<App />, document.getElementById('app'));
