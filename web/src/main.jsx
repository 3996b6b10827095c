import { render } from 'preact';
import './styles.css';
import { App } from './components/App.jsx';

render(<App />, document.getElementById('app'));
